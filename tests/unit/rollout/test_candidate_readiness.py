"""A candidate that never gets ready meets the progress deadline, and the status says why.

Each tick goes through the resource status as the controller does (state read from it, written
back), with the traffic provider confirming the weights every time: confirmed weights are no
progress for a candidate that is not ready."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from mlrollouts.api import ModelDeployment
from mlrollouts.rollout import Observation, RevisionHealth, decide
from mlrollouts.rollout.pods import pods_trouble
from mlrollouts.rollout.resource import rollout_spec, rollout_state, status_from_state

T0 = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
WHY = RevisionHealth(
    0, 1, "CrashLoopBackOff", "container server, CrashLoopBackOff, 3 restarts, last exit code 2"
)


class Cluster:
    def __init__(self) -> None:
        self.obj = {
            "apiVersion": "mlrollouts.io/v1alpha1",
            "kind": "ModelDeployment",
            "metadata": {"name": "iris", "namespace": "ml", "generation": 1, "uid": "u-1"},
            "spec": {
                "model": {"uri": "file:///models/v1.onnx", "format": "onnx"},
                "rollout": {"steps": [{"weight": 20, "duration": "10s"}], "progressDeadline": "30s"},
            },
        }
        self.now = T0
        self.health: dict[str, RevisionHealth] = {}
        self.weights: dict[str, int] | None = None
        self.events: list[str] = []

    def tick(self, after: float = 0.0) -> dict:
        self.now += timedelta(seconds=after)
        md = ModelDeployment.model_validate(self.obj)
        spec = rollout_spec(md)
        obs = Observation(revisions=dict(self.health), verified_weights=self.weights)
        decision = decide(spec, rollout_state(md, spec), obs, self.now)
        status = status_from_state(decision.state, spec, md.status, True, self.now)
        self.obj = {**self.obj, "status": status}
        self.weights = dict(decision.weights)
        self.events += [f"{e.reason}: {e.message}" for e in decision.events]
        return status

    def deploy(self, uri: str) -> str:
        meta = {**self.obj["metadata"], "generation": self.obj["metadata"]["generation"] + 1}
        self.obj = {**self.obj, "metadata": meta, "spec": {**self.obj["spec"], "model": {"uri": uri}}}
        return self.tick()["candidateRevision"]


def conditions(status: dict) -> dict[str, dict]:
    return {c["type"]: c for c in status["conditions"]}


def healthy_cluster() -> tuple[Cluster, str]:
    cluster = Cluster()
    stable = cluster.tick()["stableRevision"]
    cluster.health[stable] = RevisionHealth(1, 1)
    assert cluster.tick(1)["phase"] == "Healthy"
    return cluster, stable


def test_a_candidate_that_never_gets_ready_is_rolled_back_at_the_deadline_with_the_pods_words():
    cluster, stable = healthy_cluster()
    candidate = cluster.deploy("file:///models/v2.onnx")
    cluster.health[candidate] = WHY
    for _ in range(29):
        status = cluster.tick(1)
    assert status["phase"] == "Progressing"
    assert status["message"] == f"waiting for revision {candidate} to become ready: {WHY.message}"
    ready = conditions(status)["CandidateReady"]
    assert (ready["status"], ready["reason"]) == ("False", "CrashLoopBackOff")
    assert ready["message"] == f"revision {candidate}: 0/1 replicas ready: {WHY.message}"
    status = cluster.tick(2)
    assert status["phase"] == "Degraded" and status["failedRevision"] == candidate
    assert status["message"] == (
        f"ProgressDeadlineExceeded: revision {candidate} not ready after 31s (progressDeadline 30s): "
        f"{WHY.message}"
    )
    assert {w["revision"]: w["desired"] for w in status["weights"]} == {stable: 100, candidate: 0}
    assert "CandidateReady" not in conditions(status)
    assert cluster.events[-1].startswith(f"RolledBack: revision {candidate} rolled back to {stable}")


def test_the_deadline_counts_from_when_a_ready_candidate_stopped_being_ready():
    cluster, _ = healthy_cluster()
    candidate = cluster.deploy("file:///models/v2.onnx")
    cluster.health[candidate] = RevisionHealth(1, 1)
    cluster.tick(1)
    status = cluster.tick(1)
    assert conditions(status)["CandidateReady"]["status"] == "True"
    assert {w["revision"]: w["desired"] for w in status["weights"]}[candidate] == 20
    cluster.tick(40)  # the step ended long ago; now its pod crashes
    cluster.health[candidate] = WHY
    status = cluster.tick(1)
    assert status["phase"] == "Progressing", status["message"]
    status = cluster.tick(29)
    assert status["phase"] == "Progressing", status["message"]
    assert cluster.tick(2)["phase"] == "Degraded"


def test_a_first_revision_that_never_gets_ready_is_degraded_at_the_deadline():
    cluster = Cluster()
    first = cluster.tick()["stableRevision"]
    cluster.health[first] = WHY
    for _ in range(30):
        status = cluster.tick(1)
    assert status["phase"] == "Progressing"
    status = cluster.tick(1)
    assert status["phase"] == "Degraded"
    assert status["message"].endswith(f"(progressDeadline 30s): {WHY.message}"), status["message"]


def pod(*containers: dict, **meta: str) -> dict:
    return {"metadata": dict(meta), "status": {"phase": "Running", "containerStatuses": list(containers)}}


def test_the_most_telling_words_of_the_pods_are_kept():
    report = '{"reason": "ModelFetchFailed", "message": "fetch failed: http://models/m.onnx: HTTP 500"}'
    crash = {
        "name": "server",
        "ready": False,
        "restartCount": 3,
        "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "exit code 4"}},
        "lastState": {"terminated": {"exitCode": 4, "reason": "Error", "message": f"loading\n{report}\n"}},
    }
    starting = {"name": "server", "ready": False, "restartCount": 0, "state": {"running": {}}}
    ready = {"name": "server", "ready": True, "restartCount": 0, "state": {"running": {}}}
    trouble = pods_trouble([pod(starting), pod(crash)])
    assert trouble is not None and trouble.reason == "ModelFetchFailed"
    assert trouble.message == (
        "ModelFetchFailed: fetch failed: http://models/m.onnx: HTTP 500 "
        "(container server, CrashLoopBackOff, 3 restarts, last exit code 4)"
    )
    tail = {
        **crash,
        "lastState": {"terminated": {"exitCode": 2, "message": "usage: x\nx: error: bad flag\n"}},
    }
    trouble = pods_trouble([pod(tail)])
    assert trouble is not None and trouble.reason == "CrashLoopBackOff"
    assert (
        trouble.message
        == "container server, CrashLoopBackOff, 3 restarts, last exit code 2: x: error: bad flag"
    )
    trouble = pods_trouble([pod(starting)])
    assert trouble is not None and (trouble.reason, trouble.message) == (
        "NotReady",
        "container server, running, not ready",
    )
    assert pods_trouble([pod(ready), pod(crash, deletionTimestamp="2026-01-01T00:00:00Z")]) is None
    waiting = {
        "phase": "Pending",
        "conditions": [{"type": "Ready", "status": "False", "message": "secret s not found"}],
    }
    trouble = pods_trouble([{"metadata": {}, "status": waiting}])
    assert trouble is not None and trouble.message == "secret s not found"
