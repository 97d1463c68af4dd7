"""``mlrollouts operator run``: the ModelDeployment controller."""

from __future__ import annotations

import argparse
import os


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("operator", help="run the mlrollouts operator")
    sub = parser.add_subparsers(dest="operator_command", metavar="COMMAND")
    run = sub.add_parser("run", help="watch ModelDeployments and roll their revisions out")
    run.add_argument(
        "--namespace",
        action="append",
        dest="namespaces",
        default=None,
        help="watch only this namespace (repeatable); default: all namespaces",
    )
    run.add_argument("--metrics-port", type=int, default=None, help="serve mlrollouts_* metrics on this port")
    run.add_argument(
        "--prometheus-url",
        default=os.environ.get("MLROLLOUTS_PROMETHEUS_URL"),
        help="Prometheus used when a resource names none (env MLROLLOUTS_PROMETHEUS_URL)",
    )
    run.add_argument(
        "--serving-image",
        default=os.environ.get("MLROLLOUTS_SERVING_IMAGE", "mlrollouts/serving:0.1.0"),
        help="image of the model server and router when a resource names none",
    )
    run.add_argument(
        "--upstream-template",
        default="http://{service}.{namespace}.svc:80",
        help="how the router reaches a revision Service ({service}, {namespace})",
    )
    run.add_argument(
        "--peering",
        default=None,
        help="kopf peering name: several replicas with one active (default: standalone)",
    )
    run.add_argument("--priority", type=int, default=0, help="peering priority of this replica")
    run.add_argument(
        "--tick",
        type=float,
        default=30.0,
        help="longest sleep of a resource's driver between re-checks (it wakes earlier when work is due)",
    )
    run.add_argument(
        "--poll",
        type=float,
        default=1.0,
        help="seconds between passes while waiting for readiness or traffic",
    )
    run.add_argument(
        "--liveness", default=None, help="kopf liveness endpoint, e.g. http://0.0.0.0:8080/healthz"
    )
    run.set_defaults(handler=_run)
    parser.set_defaults(handler=lambda args: parser.print_help() or 2)


def _run(args: argparse.Namespace) -> int:
    from mlrollouts.controller.config import OperatorConfig
    from mlrollouts.controller.run import run

    for flag, value in (("--tick", args.tick), ("--poll", args.poll)):
        if value <= 0:
            raise SystemExit(f"{flag}: must be a positive number of seconds, got {value}")
    config = OperatorConfig(
        serving_image=args.serving_image,
        prometheus_url=args.prometheus_url,
        upstream_template=args.upstream_template,
        tick=args.tick,
        poll=args.poll,
    )
    run(
        config,
        namespaces=args.namespaces,
        metrics_port=args.metrics_port,
        peering=args.peering,
        priority=args.priority,
        liveness=args.liveness,
    )
    return 0
