"""Rollout hooks with the real operator and a local HTTP endpoint: a failing step gate holds the
rollout until resumed, a failing pre-rollout hook rolls the candidate back, and each call is recorded
in status and made once per revision and step."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import Cluster, start_operator
from http_sink import HttpSink
from rollout_support import revision_of, wait_status, with_model

from mlrollouts.core.names import ACTION_ANNOTATION
from support import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[tuple[Cluster, object, HttpSink, str]]:
    sink = HttpSink()
    cluster = Cluster(tmp_path)
    operator, _ = start_operator(cluster, tmp_path, None)
    ns = f"t-{uuid.uuid4().hex[:8]}"
    cluster.create_namespace(ns)
    try:
        yield cluster, operator, sink, ns
    finally:
        operator.stop()
        cluster.stop()
        sink.stop()


def hooked(uri: str, hooks: list[dict]) -> dict:
    return {
        "apiVersion": "mlrollouts.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "hooked"},
        "spec": {
            "model": {"uri": uri, "format": "onnx"},
            "rollout": {
                "steps": [{"weight": 20, "duration": "1s"}, {"weight": 50, "duration": "1s"}],
                "scaleDownDelay": "1s",
                "hooks": hooks,
            },
        },
    }


def start_rollout(cluster: Cluster, operator, ns: str, first: dict) -> str:
    cluster.create(ns, first)
    wait_status(cluster, ns, "hooked", lambda s: s.get("phase") == "Healthy", 60, "Healthy", operator)
    second = with_model(first, "file:///models/hooked-2.onnx")
    cluster.patch(ns, "hooked", {"spec": {"model": second["spec"]["model"]}})
    return revision_of(second)


def candidate_weight(status: dict, candidate: str) -> int:
    return next((w["desired"] for w in status.get("weights", []) if w["revision"] == candidate), 0)


def test_failing_step_gate_holds_until_resumed(setup) -> None:
    cluster, operator, sink, ns = setup
    sink.statuses["/confirm"] = 500
    hooks = [
        {
            "name": "confirm",
            "type": "step",
            "url": sink.url("/confirm"),
            "steps": [2],
            "metadata": {"team": "ml"},
        },
        {"name": "tell", "type": "post-rollout", "url": sink.url("/tell")},
    ]
    candidate = start_rollout(cluster, operator, ns, hooked("file:///models/hooked-1.onnx", hooks))
    held = wait_status(cluster, ns, "hooked", lambda s: s.get("phase") == "Paused", 60, "held", operator)
    progressing = next(c for c in held["conditions"] if c["type"] == "Progressing")
    assert (
        progressing["reason"] == "HookFailed" and "confirm failed before step 2: HTTP 500" in held["message"]
    )
    assert candidate_weight(held, candidate) == 20  # step 2's weight was never set
    (record,) = [h for h in held["hooks"] if h["name"] == "confirm"]
    assert (record["revision"], record["step"], record["result"]) == (candidate, 2, "Failed")
    (call,) = sink.bodies("/confirm")
    assert call == {
        "name": "hooked",
        "namespace": ns,
        "revision": candidate,
        "phase": "Progressing",
        "step": 2,
        "hook": "confirm",
        "type": "step",
        "metadata": {"team": "ml"},
    }
    assert candidate_weight(cluster.status(ns, "hooked"), candidate) == 20
    assert len(sink.bodies("/confirm")) == 1  # a failed gate is not called again by itself

    sink.statuses["/confirm"] = 200
    cluster.annotate(ns, "hooked", ACTION_ANNOTATION, "resume")
    done = wait_status(
        cluster, ns, "hooked", lambda s: s.get("stableRevision") == candidate, 60, "promoted", operator
    )
    assert len(sink.bodies("/confirm")) == 2
    tell = wait_until(lambda: sink.bodies("/tell") or None, timeout=15, message="post-rollout call")
    assert len(tell) == 1 and tell[0]["revision"] == candidate and tell[0]["phase"] == "Healthy"
    records = wait_status(
        cluster,
        ns,
        "hooked",
        lambda s: any(h["name"] == "tell" and h["result"] == "Succeeded" for h in s.get("hooks", [])),
        15,
        "post-rollout recorded",
        operator,
    )["hooks"]
    assert done["phase"] == "Healthy" and {h["name"] for h in records} == {"confirm", "tell"}


def test_failing_pre_rollout_hook_rolls_back(setup) -> None:
    cluster, operator, sink, ns = setup
    sink.statuses["/smoke"] = 503
    hooks = [{"name": "smoke", "type": "pre-rollout", "url": sink.url("/smoke"), "timeout": "2s"}]
    candidate = start_rollout(cluster, operator, ns, hooked("file:///models/hooked-1.onnx", hooks))
    status = wait_status(
        cluster, ns, "hooked", lambda s: s.get("phase") == "Degraded", 60, "rolled back", operator
    )
    assert status["failedRevision"] == candidate
    assert "pre-rollout hook smoke failed before the first step: HTTP 503" in status["message"]
    (call,) = sink.bodies("/smoke")
    assert call["revision"] == candidate and call["step"] is None and call["type"] == "pre-rollout"

    def rolled_back() -> list[str] | None:
        reasons = [e["reason"] for e in cluster.events(ns, "hooked")]
        return reasons if "RolledBack" in reasons else None

    reasons = wait_until(rolled_back, timeout=10, message="RolledBack event")
    assert "StepStarted" not in reasons  # no step ran, no traffic moved
