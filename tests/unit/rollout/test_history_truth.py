"""History is written once and stays true: each analysis run names the revision it judged, and a
revision's outcome and the reason it ended survive later rollouts and every status round trip."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from mlrollouts.api import ModelDeployment, ModelDeploymentStatus
from mlrollouts.core.verdicts import CheckOutcome, Verdict
from mlrollouts.rollout import AnalysisRun, Observation, RevisionHealth, decide
from mlrollouts.rollout.resource import rollout_spec, rollout_state, status_from_state

T0 = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)


def manifest(uri: str) -> dict:
    return {
        "apiVersion": "mlrollouts.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "iris", "namespace": "ml", "generation": 1, "uid": "u-1"},
        "spec": {
            "model": {"uri": uri, "format": "onnx"},
            "serving": {"replicas": 1},
            "rollout": {
                "steps": [{"weight": 20, "duration": "10s"}, {"weight": 50, "duration": "10s"}],
                "analysis": {
                    "interval": "5s",
                    "failureLimit": 2,
                    "checks": [{"name": "errors", "template": "error-rate", "max": 0.05}],
                },
            },
        },
    }


class Cluster:
    """Every tick reads the state from the status and writes it back, as the controller does."""

    def __init__(self) -> None:
        self.obj = manifest("file:///models/v1.onnx")
        self.now = T0
        self.weights: dict[str, int] | None = None
        self.replicas: dict[str, int] = {}

    def tick(
        self,
        after: float = 0.0,
        verdict: Verdict | None = None,
        judged: str | None = None,
        samples: float = 100,
    ) -> None:
        self.now += timedelta(seconds=after)
        md = ModelDeployment.model_validate(self.obj)
        spec = rollout_spec(md)
        state = rollout_state(md, spec)
        run = None
        if verdict is not None:
            run = AnalysisRun(
                self.now,
                (CheckOutcome("errors", verdict, value=0.1, samples=samples),),
                revision=judged or state.candidate,
            )
        obs = Observation(
            revisions={r: RevisionHealth(n, n) for r, n in self.replicas.items()},
            verified_weights=self.weights,
            analysis=run,
        )
        decision = decide(spec, state, obs, self.now)
        status = status_from_state(decision.state, spec, md.status, True, self.now)
        ModelDeploymentStatus.model_validate(status)
        self.obj = {**self.obj, "status": status}
        self.weights = dict(decision.weights)
        self.replicas.update(decision.replicas)

    def deploy(self, uri: str) -> str:
        meta = {**self.obj["metadata"], "generation": self.obj["metadata"]["generation"] + 1}
        spec = {**self.obj["spec"], "model": {"uri": uri, "format": "onnx"}}
        self.obj = {**self.obj, "metadata": meta, "spec": spec}
        for _ in range(3):
            self.tick()
        return self.status["candidateRevision"]

    @property
    def status(self) -> dict:
        return self.obj["status"]

    def records(self) -> dict[str, dict]:
        return {r["revision"]: r for r in self.status["revisions"]}

    def runs_of(self, revision: str) -> list[dict]:
        return [r for r in self.status["analysis"]["runs"] if r.get("revision") == revision]


def test_runs_outcomes_and_messages_stay_as_written_across_a_rollback_and_a_promotion():
    cluster = Cluster()
    for _ in range(3):
        cluster.tick()
    v1 = cluster.status["stableRevision"]
    assert cluster.records()[v1]["outcome"] == "Serving"

    v2 = cluster.deploy("file:///models/v2.onnx")
    cluster.tick(5, Verdict.FAIL)
    cluster.tick(5, Verdict.FAIL)
    assert cluster.status["phase"] == "Degraded" and cluster.status["failedRevision"] == v2
    # after the rollback there is no candidate, and the failed runs still name the revision they judged
    assert cluster.status.get("candidateRevision") is None
    assert [r["verdict"] for r in cluster.runs_of(v2)] == ["Fail", "Fail"]
    rolled_back = cluster.records()[v2]
    assert rolled_back["outcome"] == "RolledBack"
    assert rolled_back["message"].startswith("AnalysisFailed: analysis failed 2 times")

    v3 = cluster.deploy("file:///models/v3.onnx")
    for _ in range(2):
        cluster.tick(5, Verdict.PASS)
        cluster.tick(5, Verdict.PASS)
        cluster.tick()
    assert cluster.status["phase"] == "Healthy" and cluster.status["stableRevision"] == v3
    records = cluster.records()
    assert records[v2] == rolled_back  # a final outcome and its message never change
    assert records[v3]["outcome"] == "Promoted" and records[v3]["message"] == "promoted after 2 of 2 steps"
    assert records[v1]["outcome"] == "Superseded" and records[v1]["message"] == f"superseded by {v3}"
    assert [r["verdict"] for r in cluster.runs_of(v2)] == ["Fail", "Fail"]
    assert [r["verdict"] for r in cluster.runs_of(v3)] == ["Pass"] * 4
    assert all(r.get("revision") in (v2, v3) for r in cluster.status["analysis"]["runs"])

    v4 = cluster.deploy("file:///models/v4.onnx")
    cluster.tick(5, Verdict.PASS)
    cluster.deploy("file:///models/v5.onnx")  # v4 withdrawn mid-rollout
    records = cluster.records()
    assert records[v3]["outcome"] == "Promoted"  # still the stable: its outcome is how its rollout ended
    assert records[v4]["outcome"] == "Superseded"
    assert "withdrawn mid-rollout" in records[v4]["message"]
    assert records[v2] == rolled_back


def test_a_run_that_judged_another_revision_is_not_recorded():
    cluster = Cluster()
    for _ in range(3):
        cluster.tick()
    v2 = cluster.deploy("file:///models/v2.onnx")
    cluster.tick(5, Verdict.FAIL, judged="0123456789")
    assert cluster.status["analysis"]["runs"] == []
    assert cluster.status["analysis"]["consecutiveFailures"] == 0
    cluster.tick(0, Verdict.FAIL)
    assert [r["revision"] for r in cluster.status["analysis"]["runs"]] == [v2]
