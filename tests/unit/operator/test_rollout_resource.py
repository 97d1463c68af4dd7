"""The resource status is the rollout's only memory: every tick survives a round trip through it."""

from __future__ import annotations

from datetime import timedelta

from test_rollout_machine import T0, positive

from mlrollouts.api import ModelDeployment, ModelDeploymentStatus
from mlrollouts.core.verdicts import CheckOutcome, Verdict
from mlrollouts.rollout import (
    Action,
    AnalysisRun,
    Observation,
    RevisionHealth,
    decide,
)
from mlrollouts.rollout.resource import (
    requested_action,
    rollout_spec,
    rollout_state,
    status_from_state,
    target_revision,
)


def manifest(uri: str = "file:///models/iris-1.onnx", **rollout) -> dict:
    base_rollout = {
        "strategy": "Canary",
        "steps": [
            {"shadow": {"percent": 50, "duration": "10s"}},
            {"weight": 20, "duration": "10s"},
            {"approval": {}},
            {"weight": 50, "duration": "10s"},
        ],
        "analysis": {
            "interval": "5s",
            "failureLimit": 2,
            "checks": [{"name": "errors", "template": "error-rate", "max": 0.05}],
        },
        "scaleDownDelay": "30s",
    }
    base_rollout.update(rollout)
    return {
        "apiVersion": "mlrollouts.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "iris", "namespace": "ml", "generation": 1, "uid": "u-1"},
        "spec": {
            "model": {"uri": uri, "format": "onnx"},
            "serving": {"replicas": 2},
            "rollout": base_rollout,
        },
    }


class ResourceSim:
    """Like the controller: state is read from the resource status and written back at every tick."""

    def __init__(self, obj: dict) -> None:
        self.obj = obj
        self.now = T0
        self.weights: dict[str, int] | None = None
        self.replicas: dict[str, int] = {}

    @property
    def md(self) -> ModelDeployment:
        return ModelDeployment.model_validate(self.obj)

    def tick(self, after: float = 0.0, verdict: Verdict | None = None, action: Action | None = None):
        self.now += timedelta(seconds=after)
        md = self.md
        spec = rollout_spec(md)
        state = rollout_state(md, spec)
        run = AnalysisRun(self.now, (CheckOutcome("errors", verdict, value=0.1),)) if verdict else None
        obs = Observation(
            revisions={r: RevisionHealth(n, n) for r, n in self.replicas.items()},
            verified_weights=self.weights,
            analysis=run,
            action=action,
        )
        d = decide(spec, state, obs, self.now)
        verified = positive(self.weights or {}) == positive(d.weights)
        status = status_from_state(d.state, spec, md.status, verified, self.now, model_uri=md.spec.model.uri)
        ModelDeploymentStatus.model_validate(status)
        self.obj = {**self.obj, "status": status}
        self.weights = dict(d.weights)
        self.replicas.update(d.replicas)
        self.decision = d
        return d

    def change(self, **spec_changes) -> None:
        meta = dict(self.obj["metadata"], generation=self.obj["metadata"]["generation"] + 1)
        self.obj = {**self.obj, "metadata": meta, "spec": {**self.obj["spec"], **spec_changes}}

    @property
    def status(self) -> dict:
        return self.obj["status"]


def test_revision_ignores_replicas_but_not_the_model():
    a = ModelDeployment.model_validate(manifest())
    b = ModelDeployment.model_validate(
        {**manifest(), "spec": {**manifest()["spec"], "serving": {"replicas": 7}}}
    )
    c = ModelDeployment.model_validate(manifest(uri="file:///models/iris-2.onnx"))
    assert target_revision(a) == target_revision(b) != target_revision(c)


def test_spec_conversion_reads_durations_and_steps():
    spec = rollout_spec(ModelDeployment.model_validate(manifest()))
    assert [s.kind.value for s in spec.steps] == ["shadow", "weight", "approval", "weight"]
    assert spec.steps[0].duration == 10 and spec.steps[1].percent == 20
    assert spec.analysis.interval == 5 and spec.analysis.enabled and spec.scale_down_delay == 30


def test_action_annotation_is_parsed_or_reported_raw():
    obj = manifest()
    obj["metadata"]["annotations"] = {"mlrollouts.io/action": "Promote"}
    assert requested_action(ModelDeployment.model_validate(obj)) is Action.PROMOTE
    obj["metadata"]["annotations"] = {"mlrollouts.io/action": "explode"}
    assert requested_action(ModelDeployment.model_validate(obj)) == "explode"


def test_full_canary_through_the_status_round_trip():
    sim = ResourceSim(manifest())
    for _ in range(3):
        sim.tick()
    r1 = sim.status["stableRevision"]
    assert sim.status["phase"] == "Healthy"
    sim.change(model={"uri": "file:///models/iris-2.onnx", "format": "onnx"})
    sim.tick()
    r2 = sim.status["candidateRevision"]
    assert r2 and r2 != r1
    sim.tick()
    sim.tick()
    assert sim.status["currentStep"] == 0 and sim.status["stepStartedAt"]
    shadow = {w["revision"]: w.get("shadow") for w in sim.status["weights"]}
    assert shadow[r2] == 50
    sim.tick(5, Verdict.PASS)
    sim.tick(5, Verdict.PASS)
    assert sim.status["currentStep"] == 1
    sim.tick()
    sim.tick(5, Verdict.PASS)
    sim.tick(5, Verdict.PASS)
    assert sim.status["phase"] == "Paused" and sim.status["currentStep"] == 2
    progressing = next(c for c in sim.status["conditions"] if c["type"] == "Progressing")
    assert progressing["status"] == "Unknown" and progressing["reason"] == "AwaitingApproval"
    sim.tick(100)
    assert sim.status["phase"] == "Paused"
    sim.tick(action=Action.RESUME)
    assert sim.status["phase"] == "Progressing" and sim.status["currentStep"] == 3
    sim.tick()
    sim.tick(5, Verdict.PASS)
    sim.tick(5, Verdict.PASS)
    sim.tick()
    assert sim.status["phase"] == "Healthy" and sim.status["stableRevision"] == r2
    assert sim.status["weightsSummary"] == f"{r2}:100"
    outcomes = {r["revision"]: r.get("outcome") for r in sim.status["revisions"]}
    assert outcomes == {r1: "Superseded", r2: "Promoted"}
    assert len({(r["time"], r["step"]) for r in sim.status["analysis"]["runs"]}) == 6
    assert sim.decision.replicas[r1] == 2
    sim.tick(30)
    assert sim.decision.replicas[r1] == 0


def test_rollback_and_degraded_survive_the_round_trip():
    sim = ResourceSim(manifest(steps=[{"weight": 10, "duration": "30s"}]))
    for _ in range(3):
        sim.tick()
    sim.change(model={"uri": "file:///models/bad.onnx", "format": "onnx"})
    for _ in range(3):
        sim.tick()
    sim.tick(5, Verdict.FAIL)
    assert sim.status["analysis"]["consecutiveFailures"] == 1
    sim.tick(5, Verdict.FAIL)
    assert sim.status["phase"] == "Degraded"
    failed = sim.status["failedRevision"]
    sim.tick()
    assert sim.decision.replicas[failed] == 0
    for _ in range(3):
        sim.tick(60)
        assert sim.status["phase"] == "Degraded"
    degraded = next(c for c in sim.status["conditions"] if c["type"] == "Degraded")
    assert degraded["status"] == "True" and degraded["reason"] == "AnalysisFailed"


def test_spec_pause_keeps_the_step_clock_across_the_round_trip():
    sim = ResourceSim(manifest(steps=[{"weight": 10, "duration": "10s"}, {"weight": 30}], analysis=None))
    for _ in range(3):
        sim.tick()
    sim.change(model={"uri": "file:///models/iris-2.onnx", "format": "onnx"})
    for _ in range(3):
        sim.tick()
    sim.tick(4)
    sim.change(rollout={**sim.obj["spec"]["rollout"], "paused": True})
    sim.tick()
    sim.tick(500)
    assert sim.status["phase"] == "Paused"
    sim.change(rollout={**sim.obj["spec"]["rollout"], "paused": False})
    sim.tick()
    sim.tick(5)
    assert sim.status["currentStep"] == 0
    sim.tick(1)
    assert sim.status["currentStep"] == 1


def test_waiting_for_weights_does_not_trip_the_deadline_late_in_a_long_rollout():
    sim = ResourceSim(
        manifest(steps=[{"weight": 10, "duration": "20m"}, {"weight": 30, "duration": "1m"}], analysis=None)
    )
    for _ in range(3):
        sim.tick()
    sim.change(model={"uri": "file:///models/iris-2.onnx", "format": "onnx"})
    for _ in range(3):
        sim.tick()
    sim.tick(20 * 60)  # step 1 done, weights for step 2 set but not confirmed yet
    sim.tick(1)
    assert sim.status["phase"] == "Progressing"
    assert (
        positive({w["revision"]: w["desired"] for w in sim.status["weights"]})[
            sim.status["candidateRevision"]
        ]
        == 30
    )
