"""`mlserving route`: run the router on one port, the route table from a file or a ConfigMap."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
from typing import Any

log = logging.getLogger("mlserving.router")


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "route",
        help="run the router (weighted split, sticky assignment, shadow, feedback)",
        description="Route Open Inference Protocol traffic over model variants. The signing key of "
        "response ids comes from MLROUTER_SIGNING_KEY (the same on every replica).",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--config", metavar="FILE", help="route table file (YAML/JSON), reloaded on change")
    source.add_argument(
        "--configmap", metavar="NAMESPACE/NAME", help="watch the route table in this ConfigMap"
    )
    parser.add_argument(
        "--kubeconfig", help="kubeconfig for --configmap (default: in-cluster service account or KUBECONFIG)"
    )
    parser.add_argument(
        "--watch-timeout-seconds",
        type=int,
        default=300,
        help="length of one ConfigMap watch request before it is renewed (default 300)",
    )
    parser.add_argument("--host", default="0.0.0.0", help="listen address (default 0.0.0.0)")
    parser.add_argument("--port", type=int, default=8080, help="listen port (default 8080)")
    parser.add_argument(
        "--max-body-bytes",
        type=int,
        default=8 * 1024 * 1024,
        help="largest accepted request body (413 above)",
    )
    parser.add_argument(
        "--max-shadow-inflight", type=int, default=256, help="shadow requests in flight at most"
    )
    parser.add_argument(
        "--require-signing-key",
        action="store_true",
        default=os.environ.get("MLROUTER_REQUIRE_SIGNING_KEY", "") in ("1", "true"),
        help="refuse to start without MLROUTER_SIGNING_KEY (production)",
    )
    parser.add_argument(
        "--resolve-endpoints",
        action="store_true",
        default=os.environ.get("MLROUTER_RESOLVE_ENDPOINTS", "").lower() in ("1", "true"),
        help="send requests for <service>.<namespace>.svc upstreams straight to the Service's ready "
        "endpoints, read through the Kubernetes API (env MLROUTER_RESOLVE_ENDPOINTS)",
    )
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from mlserving.router.app import RouterApp
    from mlserving.router.ids import SIGNING_KEY_ENV, IdSigner
    from mlserving.router.sources import ConfigMapSource, FileSource, KubeAccess

    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if args.require_signing_key and not os.environ.get(SIGNING_KEY_ENV):
        log.error("%s is required (--require-signing-key) but not set", SIGNING_KEY_ENV)
        return 2
    signer = IdSigner.from_environment()
    tasks: list[asyncio.Task[None]] = []

    def make_source(app: RouterApp) -> FileSource | ConfigMapSource:
        def reject(_message: str) -> None:
            app.metrics.count(app.metrics.table_reloads, "rejected")

        def apply(table: Any) -> None:
            app.set_table(table)
            app.metrics.count(app.metrics.table_reloads, "applied")

        if args.config:
            return FileSource(args.config, apply, reject)
        namespace, slash, name = args.configmap.partition("/")
        if not slash or not namespace or not name:
            raise SystemExit("--configmap must be NAMESPACE/NAME")
        return ConfigMapSource(
            namespace,
            name,
            KubeAccess(args.kubeconfig),
            apply,
            reject,
            watch_seconds=args.watch_timeout_seconds,
        )

    async def on_startup(app: RouterApp) -> None:
        if app.resolver is not None:
            app.resolver.on_change(app.endpoints_changed)
            tasks.append(asyncio.create_task(app.resolver.run()))
        source = make_source(app)
        if isinstance(source, FileSource):
            source.load_now()  # serve the table from the first request on
        tasks.append(asyncio.create_task(source.run()))

    async def on_shutdown(_app: RouterApp) -> None:
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    resolver = None
    if args.resolve_endpoints:
        from mlserving.router.resolve import EndpointResolver

        resolver = EndpointResolver(KubeAccess(args.kubeconfig))
    app = RouterApp(
        signer,
        resolver=resolver,
        max_body_bytes=args.max_body_bytes,
        max_shadow_inflight=args.max_shadow_inflight,
        on_startup=on_startup,
        on_shutdown=on_shutdown,
    )
    config = uvicorn.Config(
        app,
        host=args.host,
        port=args.port,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        access_log=False,
        server_header=False,
        date_header=False,
        log_level=args.log_level,
        timeout_graceful_shutdown=30,
        backlog=4096,
    )
    server = uvicorn.Server(config)
    server.run()
    return 0 if server.started else 1
