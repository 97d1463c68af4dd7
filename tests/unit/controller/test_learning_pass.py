"""The learning step of the ModelDeployment pass, pass by pass with a fixed clock, against an
in-memory Kubernetes client and a real HTTP server on a loopback port standing in for the learner's
``GET /v1/status`` and ``POST /v1/pin``."""

from __future__ import annotations

import asyncio
import copy
import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from mlrollouts.controller.config import OperatorConfig
from mlrollouts.controller.modeldeployment import ModelDeploymentController
from mlrollouts.controller.resource import ResourceState, run_pass
from support.fake_kube import FakeKube

T0 = datetime(2026, 3, 2, 9, 0, 0, tzinfo=UTC)
NS = "ml"
GUARD = {"metric": "accuracy", "min": 0.8, "window": 100, "minSamples": 50}


class LearnerStandIn:
    """A learner's status and pin endpoints: answers what the test sets, records every pin asked."""

    def __init__(self) -> None:
        self.status: dict[str, Any] = {}
        self.pins: list[int | None] = []
        self.pin_answer: tuple[int, dict[str, Any]] | None = None
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path == "/v1/status":
                    self._answer(200, stand_in.status)
                else:
                    self._answer(404, {"error": "not found"})

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["content-length"])))
                if self.path != "/v1/pin":
                    self._answer(404, {"error": "not found"})
                    return
                stand_in.pins.append(body["snapshot"])
                if stand_in.pin_answer is not None:
                    self._answer(*stand_in.pin_answer)
                    return
                stand_in.status["pinned"] = body["snapshot"]
                stand_in.status["serving"] = (
                    body["snapshot"] if body["snapshot"] is not None else stand_in.status["latest"]
                )
                self._answer(200, {"pinned": body["snapshot"], "serving": stand_in.status["serving"]})

            def _answer(self, code: int, document: dict[str, Any]) -> None:
                data = json.dumps(document).encode()
                self.send_response(code)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def learned(self, samples: int, accuracy: float, snapshots: list[tuple[int, int, float | None]]) -> None:
        """The learner's state: ``snapshots`` as (version, samples, accuracy)."""
        latest = max(v for v, _, _ in snapshots)
        pinned = self.status.get("pinned")
        self.status = {
            "ready": True,
            "samples": samples,
            "metrics": {"accuracy": accuracy},
            "latest": latest,
            "serving": pinned if pinned is not None else latest,
            "pinned": pinned,
            "data_version": latest,
            "storage": {"available": True, "last_error": ""},
            "snapshots": [
                {
                    "version": v,
                    "parent": v - 1 if v else None,
                    "created": f"2026-03-02T09:00:0{v % 10}.000Z",
                    "samples": n,
                    "metrics": {} if acc is None else {"accuracy": acc},
                    "data_version": v,
                    "data_seq_start": 0,
                    "data_seq_end": n,
                }
                for v, n, acc in snapshots
            ],
        }

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def learner() -> Iterator[LearnerStandIn]:
    stand_in = LearnerStandIn()
    yield stand_in
    stand_in.stop()


def config_for(learner: LearnerStandIn) -> OperatorConfig:
    # every Service resolves to the stand-in: only the learner is called over HTTP by the pass
    return OperatorConfig(prometheus_url=None, poll=1.0, upstream_template=f"http://127.0.0.1:{learner.port}")


def learning_deployment(name: str = "iris", **learning: Any) -> dict:
    return {
        "apiVersion": "mlrollouts.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": name, "namespace": NS, "uid": f"uid-{name}", "generation": 1},
        "spec": {
            "model": {"uri": "file:///models/iris.skops", "format": "sklearn"},
            "rollout": {"strategy": "Immediate"},
            "learning": {
                "enabled": True,
                "algorithm": "SGDClassifier",
                "snapshotEvery": 50,
                "feedback": {"batchSize": 16, "maxDelay": "10m"},
                "guard": GUARD,
                "storage": {"uri": "s3://learning/iris"},
                **learning,
            },
        },
    }


class Passes:
    def __init__(self, fake: FakeKube, config: OperatorConfig) -> None:
        self.fake, self.config = fake, config
        self.state, self.controller, self.tick = ResourceState(), ModelDeploymentController(), 0

    def run(self, name: str = "iris"):
        self.tick += 1
        body = copy.deepcopy(self.fake.object("ModelDeployment", NS, name))
        now = T0 + timedelta(seconds=self.tick)
        return asyncio.run(run_pass(self.controller, body, self.fake, self.config, self.state, now=now))

    def status(self, name: str = "iris") -> dict:
        return self.fake.object("ModelDeployment", NS, name)["status"]

    def condition(self, name: str = "iris") -> dict:
        return next(c for c in self.status(name)["conditions"] if c["type"] == "LearningHealthy")


def test_learning_adds_the_learner_its_key_and_the_serving_flags(learner):
    learner.learned(0, 0.0, [(0, 0, None)])
    fake = FakeKube()
    fake.put(learning_deployment(params={"eta0": 0.05, "learning_rate": "constant"}))
    passes = Passes(fake, config_for(learner))
    outcome = passes.run()
    deployment = fake.object("Deployment", NS, "iris-learner")
    assert deployment["spec"]["replicas"] == 1 and deployment["spec"]["strategy"] == {"type": "Recreate"}
    pod = deployment["spec"]["template"]["spec"]
    [container] = pod["containers"]
    args = container["args"]
    assert args[0] == "learn"
    flags = dict(zip(args[1::2], args[2::2], strict=False))
    assert flags["--storage-uri"] == "s3://learning/iris" and flags["--algorithm"] == "SGDClassifier"
    assert (flags["--snapshot-every"], flags["--batch-size"], flags["--window"]) == ("50", "16", "100")
    assert json.loads(flags["--estimator-params"]) == {"eta0": 0.05, "learning_rate": "constant"}
    key_file = flags["--signing-key-file"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert {v["name"]: v for v in pod["volumes"]}["snapshot-key"]["secret"][
        "secretName"
    ] == "iris-snapshot-key"
    assert fake.object("Service", NS, "iris-learner")["spec"]["ports"][0]["port"] == 80
    assert fake.object("Secret", NS, "iris-snapshot-key") is not None
    [serving] = [n for n in fake.names("Deployment") if n not in ("iris-learner", "iris-router")]
    serving_pod = fake.object("Deployment", NS, serving)["spec"]["template"]["spec"]
    serving_args = serving_pod["containers"][0]["args"]
    serving_flags = dict(zip(serving_args[1::2], serving_args[2::2], strict=False))
    assert serving_flags["--learner-url"] == f"http://127.0.0.1:{learner.port}"
    assert serving_flags["--snapshot-uri"] == "s3://learning/iris"
    assert serving_flags["--snapshot-key-file"] == key_file
    assert "snapshot-key" in {v["name"] for v in serving_pod["volumes"]}
    assert outcome.requeue_after is not None and outcome.requeue_after <= 2.0
    passes.run()
    assert [w for w in fake.writes if w[1] == "Secret" and w[2] == "iris-snapshot-key"] == [
        ("create", "Secret", "iris-snapshot-key")
    ]


def test_the_learners_state_becomes_status_learning_and_a_breach_pins_the_last_good_snapshot(learner):
    learner.learned(120, 0.93, [(0, 0, None), (1, 50, 0.9), (2, 100, 0.92)])
    fake = FakeKube()
    fake.put(learning_deployment())
    passes = Passes(fake, config_for(learner))
    first = passes.run()
    learning = passes.status()["learning"]
    assert (learning["latestSnapshot"], learning["servingSnapshot"], learning["lastGoodSnapshot"]) == (
        2,
        2,
        2,
    )
    assert [s["verdict"] for s in learning["snapshots"]] == ["Unjudged", "Good", "Good"]
    assert learning["snapshots"][2]["dataRange"] == "[0, 100)"
    assert (passes.condition()["status"], passes.condition()["reason"]) == ("True", "Learning")
    assert "SnapshotPublished" in [e.reason for e in first.events]
    assert learner.pins == []

    learner.learned(200, 0.55, [(0, 0, None), (1, 50, 0.9), (2, 100, 0.92), (3, 150, 0.8), (4, 200, 0.55)])
    breached = passes.run()
    assert learner.pins == [2]
    learning = passes.status()["learning"]
    assert (learning["pinned"], learning["pinnedBy"], learning["servingSnapshot"]) == (2, "Guard", 2)
    assert [s["verdict"] for s in learning["snapshots"]][3:] == ["Bad", "Bad"]
    assert {"GuardBreached", "SnapshotPinned"} <= {e.reason for e in breached.events}
    assert (passes.condition()["status"], passes.condition()["reason"]) == ("False", "GuardBreached")
    # the rollout's own conditions are still there
    assert {"Ready", "Progressing", "Degraded"} <= {c["type"] for c in passes.status()["conditions"]}

    passes.run()
    assert learner.pins == [2]  # the learner holds the pin: nothing asked again


def test_a_refused_pin_keeps_what_the_learner_holds_and_says_why_once(learner):
    learner.learned(120, 0.93, [(0, 0, None), (1, 50, 0.9)])
    learner.pin_answer = (503, {"error": "storage: OSError: bucket unreachable"})
    fake = FakeKube()
    fake.put(learning_deployment(pinnedSnapshot=0))
    passes = Passes(fake, config_for(learner))
    first = passes.run()
    second = passes.run()
    assert learner.pins == [0, 0]
    learning = passes.status()["learning"]
    assert learning.get("pinned") is None and learning["servingSnapshot"] == 1
    condition = passes.condition()
    assert (condition["status"], condition["reason"]) == ("False", "PinFailed")
    assert "bucket unreachable" in condition["message"]
    assert [e.reason for e in first.events].count("PinFailed") == 1
    assert "PinFailed" not in [e.reason for e in second.events]
    learner.pin_answer = None
    passes.run()
    assert passes.status()["learning"]["pinned"] == 0 and passes.condition()["reason"] == "Pinned"


def test_an_unreachable_learner_is_reported_and_the_status_kept(learner):
    learner.learned(120, 0.93, [(0, 0, None), (1, 50, 0.9)])
    fake = FakeKube()
    fake.put(learning_deployment())
    passes = Passes(fake, config_for(learner))
    passes.run()
    learner.stop()
    down = passes.run()
    assert passes.condition()["reason"] == "LearnerUnavailable"
    assert "LearnerUnavailable" in [e.reason for e in down.events]
    assert passes.status()["learning"]["latestSnapshot"] == 1


def test_turning_learning_off_removes_the_learner_and_keeps_its_key(learner):
    learner.learned(0, 0.0, [(0, 0, None)])
    fake = FakeKube()
    fake.put(learning_deployment())
    passes = Passes(fake, config_for(learner))
    passes.run()
    body = fake.object("ModelDeployment", NS, "iris")
    body["spec"]["learning"]["enabled"] = False
    body["metadata"]["generation"] = 2
    passes.run()
    assert fake.object("Deployment", NS, "iris-learner") is None
    assert fake.object("Service", NS, "iris-learner") is None
    assert fake.object("Secret", NS, "iris-snapshot-key") is not None
    status = passes.status()
    assert "learning" not in status
    assert "LearningHealthy" not in {c["type"] for c in status["conditions"]}


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"learning": {"algorithm": "RandomForestClassifier"}}, "spec.learning.algorithm"),
        ({"model": {"uri": "file:///models/iris.onnx"}}, "spec.model.uri"),
        ({"learning": {"storage": {"uri": "gs://bucket/iris"}}}, "spec.learning.storage.uri"),
    ],
)
def test_what_cannot_learn_is_refused_naming_the_field(learner, change, field):
    body = learning_deployment()
    for section, values in change.items():
        body["spec"][section] = {**body["spec"][section], **values}
    fake = FakeKube()
    fake.put(body)
    outcome = Passes(fake, config_for(learner)).run()
    status = fake.object("ModelDeployment", NS, "iris")["status"]
    assert status["phase"] == "Degraded" and field in status["message"]
    assert [e.reason for e in outcome.events] == ["InvalidSpec"]
    assert fake.names("Deployment") == [] and learner.pins == []
