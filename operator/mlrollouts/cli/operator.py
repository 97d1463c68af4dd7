"""``mlrollouts operator run``: the ModelDeployment controller."""

from __future__ import annotations

import argparse
import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mlrollouts.controller.config import OperatorConfig

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
LOG_FORMATS = ("json", "text")

ENV_DEFAULTS = {
    "--prometheus-url": ("MLROLLOUTS_PROMETHEUS_URL", None),
    "--prometheus-timeout": ("MLROLLOUTS_PROMETHEUS_TIMEOUT", "10s"),
    "--allowed-images": ("MLROLLOUTS_ALLOWED_IMAGES", ""),
    "--log-level": ("MLROLLOUTS_LOG_LEVEL", "INFO"),
    "--log-format": ("MLROLLOUTS_LOG_FORMAT", "text"),
    "--serving-image": ("MLROLLOUTS_SERVING_IMAGE", "mlrollouts/serving:0.1.0"),
}
"""The flags that default to an environment variable (as the chart sets them), with their fallback."""


def _env_flag(parser: argparse.ArgumentParser, flag: str, help: str, **options: Any) -> None:
    """A flag whose default comes from its environment variable, which its help names."""
    env, fallback = ENV_DEFAULTS[flag]
    parser.add_argument(flag, default=os.environ.get(env, fallback), help=f"{help} (env {env})", **options)


def _named(flag: str) -> str:
    """The flag and its environment variable, as error messages name them."""
    return f"{flag} (env {ENV_DEFAULTS[flag][0]})"


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
    _env_flag(run, "--prometheus-url", "Prometheus used when a resource names none")
    _env_flag(
        run,
        "--prometheus-timeout",
        "longest a Prometheus query may take when a resource names no timeout, e.g. 10s",
    )
    _env_flag(
        run,
        "--allowed-images",
        "comma-separated shell patterns of the serving and router images a resource may use, "
        "e.g. 'registry.example.com/models/*'; empty allows any; the default image is always allowed",
    )
    _env_flag(run, "--log-level", "DEBUG, INFO, WARNING or ERROR", type=str.upper, choices=LOG_LEVELS)
    _env_flag(run, "--log-format", "json (one object a line) or text", type=str.lower, choices=LOG_FORMATS)
    _env_flag(run, "--serving-image", "image of the model server and router when a resource names none")
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


def operator_config(args: argparse.Namespace) -> OperatorConfig:
    """The operator's settings from the ``operator run`` flags (which default to MLROLLOUTS_* env);
    a bad value stops with the flag and its environment variable named."""
    from mlrollouts.controller.config import OperatorConfig, parse_image_patterns
    from mlrollouts.core.durations import parse_duration

    for flag, value in (("--tick", args.tick), ("--poll", args.poll)):
        if value <= 0:
            raise SystemExit(f"{flag}: must be a positive number of seconds, got {value}")
    for flag, value, allowed in (
        ("--log-level", args.log_level, LOG_LEVELS),
        ("--log-format", args.log_format, LOG_FORMATS),
    ):
        if value not in allowed:
            raise SystemExit(f"{_named(flag)}: {value!r} is not one of {', '.join(allowed)}")
    try:
        prometheus_timeout = parse_duration(str(args.prometheus_timeout))
    except ValueError as exc:
        raise SystemExit(f"{_named('--prometheus-timeout')}: {exc}") from None
    if prometheus_timeout <= 0:
        raise SystemExit(
            f"{_named('--prometheus-timeout')}: must be positive, got {args.prometheus_timeout!r}"
        )
    try:
        return OperatorConfig(
            serving_image=args.serving_image,
            prometheus_url=args.prometheus_url,
            prometheus_timeout=prometheus_timeout,
            allowed_images=parse_image_patterns(args.allowed_images),
            upstream_template=args.upstream_template,
            tick=args.tick,
            poll=args.poll,
        )
    except ValueError as exc:  # MLROLLOUTS_NOTIFICATIONS: the message names the sink's field
        raise SystemExit(str(exc)) from None


def parse_run_args(argv: list[str]) -> argparse.Namespace:
    """``operator run`` arguments as the CLI parses them (for tools and tests)."""
    parser = argparse.ArgumentParser(prog="mlrollouts")
    register(parser.add_subparsers())
    return parser.parse_args(["operator", "run", *argv])


def _run(args: argparse.Namespace) -> int:
    from mlrollouts.controller.operator import run

    config = operator_config(args)
    run(
        config,
        namespaces=args.namespaces,
        metrics_port=args.metrics_port,
        peering=args.peering,
        priority=args.priority,
        liveness=args.liveness,
        log_level=args.log_level,
        log_format=args.log_format,
    )
    return 0
