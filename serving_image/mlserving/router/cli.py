"""`mlserving route`: run the router on one port, the route table from a file or a ConfigMap."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mlserving.router.app import RouterApp
    from mlserving.router.resolve import EndpointResolver
    from mlserving.router.sources import ConfigMapSource, FileSource

log = logging.getLogger("mlserving.router")


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "route",
        help="run the router (weighted split, sticky assignment, shadow, feedback, composite graphs)",
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
    from mlserving.cli_flags import configure_logging
    from mlserving.http.run import run_uvicorn
    from mlserving.router.app import RouterApp
    from mlserving.router.fastlane import router_protocol
    from mlserving.router.ids import SIGNING_KEY_ENV, IdSigner

    configure_logging(args.log_level)
    if args.require_signing_key and not os.environ.get(SIGNING_KEY_ENV):
        log.error("%s is required (--require-signing-key) but not set", SIGNING_KEY_ENV)
        return 2
    background = _Background(args)
    app = RouterApp(
        IdSigner.from_environment(),
        resolver=_resolver(args),
        max_body_bytes=args.max_body_bytes,
        max_shadow_inflight=args.max_shadow_inflight,
        on_startup=background.start,
        on_shutdown=background.stop,
    )
    started = run_uvicorn(
        app,
        host=args.host,
        port=args.port,
        http=router_protocol(app),  # plain inference requests in callbacks; each answer in one write
        drain_seconds=30,
        backlog=4096,
        log_level=args.log_level,
        # The router reads neither the client address nor the scheme: no X-Forwarded-* rewriting.
        proxy_headers=False,
    )
    return 0 if started else 1


def _resolver(args: argparse.Namespace) -> EndpointResolver | None:
    if not args.resolve_endpoints:
        return None
    from mlserving.router.resolve import EndpointResolver
    from mlserving.router.sources import KubeAccess

    return EndpointResolver(KubeAccess(args.kubeconfig))


class _Background:
    """The route table source (and endpoint resolver) running beside the router while it serves."""

    def __init__(self, args: argparse.Namespace) -> None:
        self._args = args
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self, app: RouterApp) -> None:
        from mlserving.router.sources import FileSource

        if app.resolver is not None:
            app.resolver.on_change(app.endpoints_changed)
            self._tasks.append(asyncio.create_task(app.resolver.run()))
        source = self._source(app)
        if isinstance(source, FileSource):
            source.load_now()  # serve the table from the first request on
        self._tasks.append(asyncio.create_task(source.run()))

    async def stop(self, _app: RouterApp) -> None:
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def _source(self, app: RouterApp) -> FileSource | ConfigMapSource:
        from mlserving.router.sources import ConfigMapSource, FileSource, KubeAccess

        def reject(_message: str) -> None:
            app.metrics.count(app.metrics.table_reloads, "rejected")

        def apply(table: Any) -> None:
            try:
                app.set_table(table)
            except Exception:  # the source must keep watching whatever one table does
                log.exception("route table could not be applied; keeping the last good table")
                app.metrics.count(app.metrics.table_reloads, "rejected")
                return
            app.metrics.count(app.metrics.table_reloads, "applied")

        args = self._args
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
