"""Run the operator: kopf's event loop with the ModelDeployment and Experiment controllers."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import kopf

from mlrollouts.controller import experiments, handlers, metrics
from mlrollouts.controller.config import OperatorConfig


def run(
    config: OperatorConfig,
    namespaces: list[str] | None = None,
    metrics_port: int | None = None,
    peering: str | None = None,
    priority: int = 0,
    liveness: str | None = None,
) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
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
                settings=handlers.settings(peering, priority),
                standalone=peering is None,
                peering_name=peering,
                priority=priority,
                liveness_endpoint=liveness,
            )
        )
