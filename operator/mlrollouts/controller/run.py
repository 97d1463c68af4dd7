"""Run the operator: kopf's event loop with the ModelDeployment and Experiment controllers."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import kopf

from mlrollouts.controller import experiments, handlers, metrics
from mlrollouts.controller.config import OperatorConfig

LOG_FORMATS = {"json": kopf.LogFormat.JSON, "text": kopf.LogFormat.FULL}


def configure_logging(level: str = "INFO", log_format: str = "text") -> None:
    """Root logging for the operator and kopf: ``json`` (one object a line) or ``text``."""
    kopf.configure(log_format=LOG_FORMATS[log_format], log_refkey="object" if log_format == "json" else None)
    logging.getLogger().setLevel(level.upper())
    logging.getLogger("httpx").setLevel(logging.WARNING)


def run(
    config: OperatorConfig,
    namespaces: list[str] | None = None,
    metrics_port: int | None = None,
    peering: str | None = None,
    priority: int = 0,
    liveness: str | None = None,
    log_level: str = "INFO",
    log_format: str = "text",
) -> None:
    configure_logging(log_level, log_format)
    if log_level.upper() != "DEBUG":
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)  # per-pass "succeeded" lines
    if metrics_port is not None:
        metrics.serve(metrics_port)
    memo = kopf.Memo(config=config)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(
            kopf.operator(
                clusterwide=not namespaces,
                namespaces=namespaces or [],
                memo=memo,
                registry=experiments.register(handlers.registry()),
                settings=handlers.settings(peering, priority, namespaced=bool(namespaces)),
                standalone=peering is None,
                peering_name=peering,
                priority=priority,
                liveness_endpoint=liveness,
            )
        )
