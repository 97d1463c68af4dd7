"""Online learning end to end with the operator's learning step: a real learner process, a real model
server process logging to it and hot-loading its snapshots, and the ModelDeployment pass (against an
in-memory Kubernetes client) observing the learner over HTTP, deciding, and pinning.

Feedback through the server is learned and published as snapshots the server then serves; a burst of
flipped labels breaches the guard, the pass pins the last good snapshot, and the server serves it.
"""

from __future__ import annotations

import asyncio
import copy
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import numpy as np
import pytest
from learner_process import learner_process

from mlrollouts.controller.config import OperatorConfig
from mlrollouts.controller.modeldeployment import ModelDeploymentController
from mlrollouts.controller.resource import ResourceState, run_pass
from support.fake_kube import FakeKube
from support.models import RunningServer, serving

pytestmark = [pytest.mark.integration, pytest.mark.slow]

T0 = datetime(2026, 3, 2, 9, 0, 0, tzinfo=UTC)
NS = "ml"
SNAPSHOT_EVERY = 64


def wait_for(predicate, timeout: float, message: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out after {timeout}s waiting for {message}"
        time.sleep(0.05)


def served_snapshot(server: RunningServer, row: np.ndarray) -> str | None:
    answer = httpx.post(
        f"{server.url}/v2/models/cancer/infer", json=server.infer_body(row[None, :]), timeout=10
    )
    assert answer.status_code == 200, answer.text
    return answer.headers.get("x-mlrollouts-snapshot")


def predict_then_label(server: RunningServer, x: np.ndarray, labels: np.ndarray) -> None:
    """Each row predicted by the server, then its label sent back through the server."""

    async def run() -> None:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            semaphore = asyncio.Semaphore(16)

            async def one(row: np.ndarray, label: int) -> None:
                async with semaphore:
                    answer = await client.post(
                        "/v2/models/cancer/infer", json=server.infer_body(row[None, :])
                    )
                    assert answer.status_code == 200, answer.text
                    body = {"id": answer.json()["id"], "label": label}
                    feedback = await client.post("/v2/models/cancer/feedback", json=body)
                    assert feedback.status_code == 200, feedback.text

            await asyncio.gather(*(one(row, int(label)) for row, label in zip(x, labels, strict=True)))

    asyncio.run(run())


class Operator:
    """The ModelDeployment pass over one resource, tick by tick; Services resolve to the learner."""

    def __init__(self, learner_url: str, storage_uri: str) -> None:
        self.kube, self.state, self.tick = FakeKube(), ResourceState(), 0
        self.config = OperatorConfig(prometheus_url=None, poll=1.0, upstream_template=learner_url)
        self.controller = ModelDeploymentController()
        self.kube.put(
            {
                "apiVersion": "mlrollouts.io/v1alpha1",
                "kind": "ModelDeployment",
                "metadata": {"name": "cancer", "namespace": NS, "uid": "uid-cancer", "generation": 1},
                "spec": {
                    "model": {"uri": "file:///models/cancer.skops", "format": "sklearn"},
                    "rollout": {"strategy": "Immediate"},
                    "learning": {
                        "enabled": True,
                        "algorithm": "SGDClassifier",
                        "snapshotEvery": SNAPSHOT_EVERY,
                        "feedback": {"batchSize": 16},
                        "guard": {"metric": "accuracy", "min": 0.8, "window": 64, "minSamples": 32},
                        "storage": {"uri": storage_uri},
                    },
                },
            }
        )

    def run(self):
        self.tick += 1
        body = copy.deepcopy(self.kube.object("ModelDeployment", NS, "cancer"))
        now = T0 + timedelta(seconds=self.tick)
        return asyncio.run(run_pass(self.controller, body, self.kube, self.config, self.state, now=now))

    @property
    def learning(self) -> dict:
        return self.kube.object("ModelDeployment", NS, "cancer")["status"]["learning"]


def test_feedback_is_learned_served_and_a_poisoned_burst_is_rolled_back(tmp_path: Path, cancer):
    model, x, y = cancer
    storage = (tmp_path / "store").as_uri()
    learner_flags = ["--snapshot-every", str(SNAPSHOT_EVERY), "--batch-size", "16", "--window", "64"]
    with learner_process(tmp_path, model, storage, extra=learner_flags) as learner:
        server_flags = [
            *("--learner-url", learner.url),
            *("--snapshot-uri", storage),
            *("--snapshot-key-file", str(tmp_path / "signing-key")),
            *("--snapshot-poll-interval", "0.2"),
            *("--download-dir", str(tmp_path / "downloads")),
        ]
        with serving(tmp_path, model, name="cancer", extra=server_flags) as server:
            wait_for(lambda: served_snapshot(server, x[0]) == "0", 20, "the initial model's snapshot served")
            operator = Operator(learner.url, storage)

            # clean feedback: three snapshots learned from production rows, the newest served
            predict_then_label(server, x[:192], y[:192])
            wait_for(lambda: learner.status()["latest"] == 3, 30, "snapshot 3 published")
            wait_for(lambda: served_snapshot(server, x[0]) == "3", 10, "snapshot 3 served")
            first = operator.run()
            learning = operator.learning
            assert (
                learning["latestSnapshot"],
                learning["servingSnapshot"],
                learning["lastGoodSnapshot"],
            ) == (3, 3, 3)
            assert [s["verdict"] for s in learning["snapshots"]] == ["Unjudged", "Good", "Good", "Good"]
            assert all(s["dataVersion"] is not None for s in learning["snapshots"][1:])
            assert "SnapshotPublished" in {e.reason for e in first.events}

            # a burst of flipped labels: the learner's prequential accuracy collapses
            predict_then_label(server, x[192:256], 1 - y[192:256])
            wait_for(
                lambda: learner.status()["samples"] == 256 and learner.status()["latest"] == 4,
                30,
                "burst learned",
            )
            assert learner.status()["metrics"]["accuracy"] < 0.8, learner.status()["metrics"]
            # unguarded, the replica serves the poisoned model
            wait_for(lambda: served_snapshot(server, x[0]) == "4", 10, "snapshot 4 served")
            breached = operator.run()
            assert {"GuardBreached", "SnapshotPinned"} <= {e.reason for e in breached.events}
            learning = operator.learning
            assert (learning["pinned"], learning["pinnedBy"], learning["lastGoodSnapshot"]) == (3, "Guard", 3)
            assert [s["verdict"] for s in learning["snapshots"]][4:] == ["Bad"]
            assert (learner.status()["pinned"], learner.status()["serving"]) == (3, 3)
            wait_for(lambda: served_snapshot(server, x[0]) == "3", 10, "the last good snapshot served again")
            condition = next(
                c
                for c in operator.kube.object("ModelDeployment", NS, "cancer")["status"]["conditions"]
                if c["type"] == "LearningHealthy"
            )
            assert (condition["status"], condition["reason"]) == ("False", "GuardBreached")

            # learning goes on while pinned; the replica stays on the pinned snapshot
            predict_then_label(server, x[256:320], y[256:320])
            wait_for(lambda: learner.status()["latest"] == 5, 30, "snapshot 5 published")
            operator.run()
            time.sleep(0.6)  # three polls of the replica
            assert served_snapshot(server, x[0]) == "3"
