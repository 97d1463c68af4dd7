"""The real operator tells configured sinks about a promotion: a CloudEvent and a Slack-style message."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from harness import Cluster, start_operator
from http_sink import HttpSink
from rollout_support import revision_of, wait_status, with_model

from support import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def model_deployment(uri: str) -> dict:
    return {
        "apiVersion": "mlrollouts.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "told"},
        "spec": {
            "model": {"uri": uri, "format": "onnx"},
            "rollout": {
                "strategy": "Canary",
                "steps": [{"weight": 50, "duration": "1s"}],
                "scaleDownDelay": "1s",
            },
        },
    }


def test_promotion_is_delivered_as_cloudevent_and_slack_message(tmp_path: Path, monkeypatch) -> None:
    sink = HttpSink()
    sinks = [
        {"name": "events", "url": sink.url("/events")},
        {"name": "chat", "url": sink.url("/chat"), "format": "Slack", "reasons": ["Promoted"]},
    ]
    monkeypatch.setenv("MLROLLOUTS_NOTIFICATIONS", json.dumps(sinks))
    cluster = Cluster(tmp_path)
    operator, _ = start_operator(cluster, tmp_path, None)
    try:
        ns = f"t-{uuid.uuid4().hex[:8]}"
        cluster.create_namespace(ns)
        first = model_deployment("file:///models/told-1.onnx")
        cluster.create(ns, first)
        wait_status(cluster, ns, "told", lambda s: s.get("phase") == "Healthy", 60, "Healthy", operator)
        second = with_model(first, "file:///models/told-2.onnx")
        candidate = revision_of(second)
        cluster.patch(ns, "told", {"spec": {"model": second["spec"]["model"]}})
        wait_status(
            cluster, ns, "told", lambda s: s.get("stableRevision") == candidate, 60, "promoted", operator
        )

        def promoted():
            events = [
                e for e in sink.bodies("/events") if e["type"] == "io.mlrollouts.modeldeployment.promoted"
            ]
            return events or None

        try:
            (event,) = wait_until(promoted, timeout=15, interval=0.2, message="promotion CloudEvent")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; received {sink.received}\n{operator.output()[-3000:]}") from None
        assert event["specversion"] == "1.0" and event["subject"] == f"{ns}/told"
        assert event["data"]["stableRevision"] == candidate
        headers = next(h for p, h, b in sink.received if p == "/events" and b == event)
        assert headers["Content-Type"] == "application/cloudevents+json"
        phases = [
            (e["data"]["previousPhase"], e["data"]["phase"])
            for e in sink.bodies("/events")
            if e["type"] == "io.mlrollouts.modeldeployment.phaseChanged"
        ]
        assert ("Healthy", "Progressing") in phases and ("Progressing", "Healthy") in phases
        chat = wait_until(lambda: sink.bodies("/chat") or None, timeout=10, message="Slack message")
        assert len(chat) == 1 and chat[0]["text"].startswith(f"ModelDeployment {ns}/told: Promoted:")
    finally:
        operator.stop()
        cluster.stop()
        sink.stop()
