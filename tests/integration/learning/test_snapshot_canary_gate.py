"""``promotion: Canary`` end to end: a real learner (holding serving until the operator pins), a
stable-snapshot and a candidate-snapshot model server (both hot-loading; the candidate follows the
learner's ``candidate`` pointer), a real Prometheus scraping both, and the ModelDeployment pass
(against an in-memory Kubernetes client) running the snapshot canary with a reward check.

The test plays the router: it splits requests between the two servers by the weights of the route
table the pass writes, and sends each response's reward (1 when the prediction is right) as
feedback. A snapshot learned from clean labels passes and is promoted to the stable server; one
learned from a burst of flipped labels answers wrongly on its share, is refused by the analysis,
marked Bad, and the stable server never serves it.
"""

from __future__ import annotations

import asyncio
import copy
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import numpy as np
import pytest
from learner_process import learner_process
from test_learning_operator import predict_then_label, served_snapshot

from mlrollouts.api import ModelDeployment
from mlrollouts.controller.config import OperatorConfig
from mlrollouts.controller.modeldeployment import ModelDeploymentController
from mlrollouts.controller.resource import ResourceState, run_pass
from mlrollouts.rollout.resource import target_revision
from mlserving.router.table import ROUTES_CONFIGMAP_KEY, RouteTable
from support.fake_kube import FakeKube
from support.models import RunningServer, serving

pytestmark = [pytest.mark.integration, pytest.mark.slow]

NS = "ml"
SNAPSHOT_EVERY = 64
REWARD = (
    'sum(delta(mlserving_reward_sum{model="{{ model }}",revision="{{ revision }}"}[{{ interval }}]))'
    ' / sum(increase(mlserving_feedback_total{model="{{ model }}",revision="{{ revision }}"}[{{ interval }}]))'
)
RESOURCE = {
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
            "storage": {"uri": "file:///placeholder"},
            "promotion": "Canary",
            "canary": {
                "steps": [{"weight": 50}],
                "analysis": {
                    "interval": "4s",
                    "failureLimit": 1,
                    "minSamples": 10,
                    "checks": [{"name": "reward", "query": REWARD, "min": 0.8}],
                },
            },
        },
    },
}


class Operator:
    """The pass over the resource at the real time; after each pass every Deployment is ready (the
    two servers stand for the revision's pods and the candidate's)."""

    def __init__(self, learner_url: str, storage_uri: str, prometheus_url: str) -> None:
        self.kube, self.state = FakeKube(), ResourceState()
        self.config = OperatorConfig(prometheus_url=prometheus_url, poll=1.0, upstream_template=learner_url)
        self.controller = ModelDeploymentController()
        resource = copy.deepcopy(RESOURCE)
        resource["spec"]["learning"]["storage"]["uri"] = storage_uri
        self.kube.put(resource)
        self.events: list[tuple[str, str]] = []

    def run(self) -> None:
        body = copy.deepcopy(self.kube.object("ModelDeployment", NS, "cancer"))
        now = datetime.now(UTC)
        outcome = asyncio.run(run_pass(self.controller, body, self.kube, self.config, self.state, now=now))
        if outcome is not None:
            self.events += [(e.reason, e.message) for e in outcome.events]
        for (kind, _, _), obj in self.kube.objects.items():
            if kind == "Deployment":
                replicas = obj["spec"].get("replicas", 1)
                obj["status"] = {
                    "readyReplicas": replicas,
                    "observedGeneration": obj["metadata"]["generation"],
                }

    @property
    def learning(self) -> dict:
        return self.kube.object("ModelDeployment", NS, "cancer")["status"]["learning"]

    @property
    def canary(self) -> dict:
        return self.learning.get("canary") or {}

    def candidate_weight(self) -> int:
        cm = self.kube.object("ConfigMap", NS, "cancer-routes")
        if cm is None:
            return 0
        route = RouteTable.from_yaml(cm["data"][ROUTES_CONFIGMAP_KEY]).route_for_model("cancer")
        assert route is not None
        weights = {v.name: v.weight for v in route.variants}
        total = sum(weights.values())
        return round(100 * sum(w for n, w in weights.items() if n.endswith("-candidate")) / total)


def label_of(answer: httpx.Response) -> int:
    outputs = answer.json()["outputs"]
    return int(next(o for o in outputs if o["name"] == "label")["data"][0])


def split_traffic(stable, candidate, weight: int, x: np.ndarray, y: np.ndarray, served: set[str]) -> None:
    """Rows split by the candidate's weight; each answer's reward sent back (no label: the learner
    learns nothing from this traffic). ``served`` collects the stable server's snapshots."""

    async def run() -> None:
        async with httpx.AsyncClient(timeout=30) as client:
            for index, (row, label) in enumerate(zip(x, y, strict=True)):
                server: RunningServer = candidate if (index * 37) % 100 < weight else stable
                answer = await client.post(
                    f"{server.url}/v2/models/cancer/infer", json=server.infer_body(row[None, :])
                )
                assert answer.status_code == 200, answer.text
                if server is stable:
                    served.add(answer.headers.get("x-mlrollouts-snapshot") or "")
                reward = 1.0 if label_of(answer) == int(label) else 0.0
                body = {"id": answer.json()["id"], "reward": reward}
                feedback = await client.post(f"{server.url}/v2/models/cancer/feedback", json=body)
                assert feedback.status_code == 200, feedback.text

    asyncio.run(run())


def drive(operator: Operator, until, stable, candidate, x, y, served, timeout: float, what: str) -> None:
    """Passes once a second with traffic in between, until ``until()``."""
    deadline = time.monotonic() + timeout
    while True:
        operator.run()
        if until():
            return
        assert time.monotonic() < deadline, f"timed out waiting for {what}: {operator.learning}"
        split_traffic(stable, candidate, operator.candidate_weight(), x, y, served)
        time.sleep(0.3)


def test_a_clean_snapshot_is_promoted_and_a_poisoned_one_refused(tmp_path: Path, cancer, prometheus):
    model, x, y = cancer
    storage = (tmp_path / "store").as_uri()
    revision = target_revision(ModelDeployment.model_validate(RESOURCE))
    learner_flags = ["--snapshot-every", str(SNAPSHOT_EVERY), "--batch-size", "16", "--hold-serving"]
    server_flags = [
        *("--snapshot-uri", storage),
        *("--snapshot-key-file", str(tmp_path / "signing-key")),
        *("--snapshot-poll-interval", "0.2"),
    ]
    probe_x, probe_y = x[192:232], y[192:232]
    served: set[str] = set()
    with learner_process(tmp_path, model, storage, extra=learner_flags) as learner:
        stable_flags = [*server_flags, "--learner-url", learner.url, "--download-dir", str(tmp_path / "s")]
        candidate_flags = [
            *server_flags,
            "--snapshot-pointer",
            "candidate",
            "--download-dir",
            str(tmp_path / "c"),
        ]
        with (
            serving(
                tmp_path, model, name="cancer", extra=stable_flags, env={"MLSERVING_REVISION": revision}
            ) as stable,
            serving(
                tmp_path,
                model,
                name="cancer",
                extra=candidate_flags,
                env={"MLSERVING_REVISION": f"{revision}-candidate"},
            ) as candidate,
        ):
            prometheus.set_targets([([s.url.removeprefix("http://") for s in (stable, candidate)], {})])
            operator = Operator(learner.url, storage, prometheus.url)
            drive(
                operator,
                lambda: operator.canary.get("stableSnapshot") == 0,
                stable,
                candidate,
                probe_x,
                probe_y,
                served,
                20,
                "snapshot 0 stable",
            )
            assert learner.status()["pinned"] == 0
            assert operator.kube.object("Deployment", NS, f"cancer-{revision}-candidate") is not None

            # clean labels: snapshot 1 is published, but serving holds until the canary promotes it
            predict_then_label(stable, x[:64], y[:64])
            wait_until_latest(learner, 1)
            assert served_snapshot(stable, x[0]) == "0"
            drive(
                operator,
                lambda: operator.canary.get("stableSnapshot") == 1,
                stable,
                candidate,
                probe_x,
                probe_y,
                served,
                40,
                "snapshot 1 promoted",
            )
            reasons = [r for r, _ in operator.events]
            assert {"SnapshotCanaryStarted", "SnapshotCanaryAnalysisPassed", "SnapshotPromoted"} <= set(
                reasons
            )
            assert learner.status()["pinned"] == 1

            # a burst of flipped labels: snapshots 2 and 3 learned from it
            predict_then_label(stable, x[64:192], 1 - y[64:192])
            wait_until_latest(learner, 3)
            served.clear()
            drive(
                operator,
                lambda: operator.canary.get("refusedSnapshot") == 3,
                stable,
                candidate,
                probe_x,
                probe_y,
                served,
                40,
                "snapshot 3 refused",
            )
            learning = operator.learning
            record = next(s for s in learning["snapshots"] if s["version"] == 3)
            assert record["verdict"] == "Bad" and "snapshot canary" in record["reason"]
            assert "AnalysisFailed" in record["reason"], record["reason"]
            assert learning["canary"]["stableSnapshot"] == 1 and learning["pinned"] == 1
            assert "SnapshotRefused" in [r for r, _ in operator.events]
            assert learner.status()["pinned"] == 1 and learner.status()["candidate"] is None
            operator.run()
            assert operator.candidate_weight() == 0
            # the poisoned snapshot never reached the stable server
            assert served <= {"1"}, served
            assert served_snapshot(stable, x[0]) == "1"


def wait_until_latest(learner, version: int) -> None:
    deadline = time.monotonic() + 30
    while learner.status()["latest"] < version:
        assert time.monotonic() < deadline, f"snapshot {version} not published: {learner.status()}"
        time.sleep(0.05)
