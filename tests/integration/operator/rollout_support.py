"""Manifests and waits shared by the rollout integration tests."""

from __future__ import annotations

from typing import Any

from harness import Cluster

from mlrollouts.api import ModelDeployment
from mlrollouts.rollout.resource import target_revision
from support import wait_until

ERRORS = {"name": "errors", "template": "error-rate", "max": 0.05, "window": "5s"}
P99 = {"name": "p99", "template": "latency-p99", "max": 0.5, "window": "5s"}


def manifest(
    name: str,
    uri: str,
    steps: list[dict[str, Any]] | None = None,
    checks: list[dict[str, Any]] | None = None,
    **analysis: Any,
) -> dict[str, Any]:
    return {
        "apiVersion": "mlrollouts.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": name},
        "spec": {
            "model": {"uri": uri, "format": "onnx"},
            "serving": {"replicas": 1},
            "rollout": {
                "strategy": "Canary",
                "steps": steps
                if steps is not None
                else [{"weight": 20, "duration": "2s"}, {"weight": 50, "duration": "2s"}],
                "analysis": {
                    "interval": "2s",
                    "failureLimit": 2,
                    "inconclusiveLimit": 50,
                    "minSamples": 10,
                    "checks": checks if checks is not None else [ERRORS, P99],
                    **analysis,
                },
                "scaleDownDelay": "1s",
                "progressDeadline": "60s",
            },
        },
    }


def revision_of(obj: dict[str, Any]) -> str:
    """The revision the operator computes for a manifest (same function, so the exporters match)."""
    return target_revision(ModelDeployment.model_validate(obj))


def with_model(obj: dict[str, Any], uri: str) -> dict[str, Any]:
    spec = {**obj["spec"], "model": {**obj["spec"]["model"], "uri": uri}}
    return {**obj, "spec": spec}


def wait_status(cluster: Cluster, ns: str, name: str, predicate, timeout: float, what: str, operator=None):
    def check():
        status = cluster.status(ns, name)
        return status if predicate(status) else None

    try:
        return wait_until(check, timeout=timeout, interval=0.2, message=what)
    except AssertionError as exc:
        detail = cluster.status(ns, name)
        tail = operator.output()[-4000:] if operator is not None else ""
        raise AssertionError(f"{exc}\nstatus: {detail}\noperator log tail:\n{tail}") from None


def verdicts(status: dict[str, Any]) -> list[str]:
    return [r["verdict"] for r in status.get("analysis", {}).get("runs", [])]
