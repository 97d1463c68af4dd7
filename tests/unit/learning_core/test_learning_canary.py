"""The snapshot canary of ``promotion: Canary``, tick by tick with a fixed clock: the status is written
to JSON and read back between ticks (as an operator restart would), and each tick asserts what the
stable and candidate snapshot Deployments serve and which share the candidate gets."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from mlrollouts.api.modeldeployment import (
    LearningStatus,
    ModelDeployment,
    Phase,
    PinSource,
    SnapshotVerdict,
)
from mlrollouts.controller.learning_canary import SnapshotTraffic, fold_candidate_split, route_weights
from mlrollouts.core.verdicts import CheckOutcome, Verdict
from mlrollouts.learning import LearnerReport, SnapshotInfo, decide_learning
from mlrollouts.learning.canary import (
    CanaryObservation,
    canary_due,
    decide_canary,
    with_canary,
)
from mlrollouts.learning.checks import learning_refusal
from mlrollouts.rollout import AnalysisRun
from mlrollouts.traffic import Readback

T0 = datetime(2026, 3, 2, 9, 0, 0, tzinfo=UTC)
LINEAGE = "a" * 64


def deployment(**learning) -> ModelDeployment:
    return ModelDeployment.model_validate(
        {
            "apiVersion": "mlrollouts.io/v1alpha1",
            "kind": "ModelDeployment",
            "metadata": {"name": "m", "namespace": "ns", "generation": 1},
            "spec": {
                "model": {"uri": "file:///models/m.skops"},
                "learning": {
                    "enabled": True,
                    "storage": {"uri": "file:///tmp/store"},
                    "guard": {"metric": "accuracy", "min": 0.6, "window": 100, "minSamples": 50},
                    "promotion": "Canary",
                    "canary": {
                        "steps": [{"weight": 20, "duration": "1m"}],
                        "analysis": {
                            "interval": "30s",
                            "failureLimit": 2,
                            "checks": [{"name": "errors", "template": "error-rate", "max": 0.05}],
                        },
                    },
                    **learning,
                },
            },
        }
    )


def snap(version: int, samples: int, accuracy: float = 0.9) -> SnapshotInfo:
    return SnapshotInfo(
        version=version,
        parent=version - 1 if version else None,
        samples=samples,
        metrics={"accuracy": accuracy},
        lineage=LINEAGE,
    )


class Canary:
    """The learner, the router and the candidate Deployment as one pass sees them, and the status
    carried from pass to pass through its JSON form."""

    def __init__(self, md: ModelDeployment) -> None:
        self.md = md
        self.status: LearningStatus | None = None
        self.now = T0
        self.snapshots = [snap(0, 0)]
        self.pinned: int | None = None
        self.candidate_pointer: int | None = None
        self.split: tuple[int, int] = (100, 0)
        self.events: list[str] = []

    def report(self) -> LearnerReport:
        latest = self.snapshots[-1].version
        serving = self.pinned if self.pinned is not None else 0
        return LearnerReport(
            ready=True,
            samples=self.snapshots[-1].samples,
            metrics={"accuracy": 0.9},
            latest=latest,
            serving=serving,
            pinned=self.pinned,
            snapshots=tuple(self.snapshots),
            candidate=self.candidate_pointer,
            lineage=LINEAGE,
        )

    def tick(self, seconds: float = 1, analysis: Verdict | None = None):
        """One pass; the learner and router obey what the previous pass asked only when told."""
        self.now += timedelta(seconds=seconds)
        learning = self.md.spec.learning
        assert learning is not None
        report = self.report()
        previous = self.status
        decision = decide_learning(
            learning,
            previous,
            report,
            self.now,
            canary_stable=previous.canary.stable_snapshot if previous and previous.canary else None,
        )
        run = None
        canary_before = decision.status.canary
        if analysis is not None:
            assert canary_before is not None and canary_due(self.md, canary_before, self.now)
            run = AnalysisRun(self.now, (CheckOutcome("errors", analysis, value=0.01),))
        seen = CanaryObservation(
            stable_ready=True,
            candidate_ready=True,
            candidate_pointer=self.candidate_pointer,
            split=self.split,
            analysis=run,
        )
        records = {r.version: r for r in decision.status.snapshots}
        canary = decide_canary(
            self.md,
            canary_before,
            records,
            report.serving,
            seen,
            self.now,
            lineage_start=decision.status.lineage_start,
        )
        assert canary is not None
        decision = with_canary(decision, canary, report)
        # what the operator writes is what it reads back on its next pass, or after a restart
        self.status = LearningStatus.model_validate(
            decision.status.model_dump(mode="json", by_alias=True, exclude_none=True)
        )
        self.events += [e.reason for e in decision.events]
        if decision.pin_changed:
            self.pinned = decision.pin
        return decision, canary

    def obey(self, canary) -> None:
        """The learner moves the candidate pointer and the router confirms the split."""
        self.candidate_pointer = canary.candidate
        self.split = (100 - canary.weight, canary.weight)


def promote_to_step(c: Canary) -> None:
    """Snapshot 1 from publication to its step of 20 % with verified weights."""
    c.snapshots.append(snap(1, 200))
    _, canary = c.tick()
    assert (canary.stable, canary.candidate, canary.weight) == (0, 1, 0)
    assert "SnapshotCanaryStarted" in c.events
    c.obey(canary)
    _, canary = c.tick()  # the candidate replicas serve snapshot 1: 20 % of traffic goes to them
    assert canary.weight == 20 and canary.status.phase is Phase.PROGRESSING
    c.obey(canary)
    _, canary = c.tick()  # the router confirms 80/20: the step's clock starts
    assert canary.status.step_started_at == c.now


def test_first_pass_pins_the_served_snapshot_as_stable():
    c = Canary(deployment())
    decision, canary = c.tick()
    assert canary.stable == 0 and canary.candidate is None and canary.weight == 0
    assert decision.pin == 0 and decision.pin_changed
    assert decision.status.pinned_by is PinSource.CANARY
    assert canary.status.phase is Phase.HEALTHY


def test_a_good_snapshot_is_promoted_step_by_step():
    c = Canary(deployment())
    c.tick()
    promote_to_step(c)
    _, canary = c.tick(30, analysis=Verdict.PASS)
    assert canary.weight == 20 and canary.stable == 0  # the step lasts 1m
    assert c.pinned == 0
    _, canary = c.tick(30, analysis=Verdict.PASS)  # step done: all traffic to the candidate first
    assert (canary.stable, canary.candidate, canary.weight) == (0, 1, 100)
    c.obey(canary)
    decision, canary = c.tick()
    assert canary.stable == 1 and canary.candidate is None and canary.weight == 0
    assert decision.pin == 1 and decision.status.pinned_by is PinSource.CANARY
    assert c.pinned == 1
    assert "SnapshotPromoted" in c.events
    assert canary.status.phase is Phase.HEALTHY


def test_a_snapshot_the_analysis_fails_is_refused_marked_bad_and_never_stable():
    c = Canary(deployment())
    c.tick()
    promote_to_step(c)
    decision, canary = c.tick(30, analysis=Verdict.FAIL)
    assert canary.refused is None and canary.weight == 20
    decision, canary = c.tick(30, analysis=Verdict.FAIL)
    assert canary.refused is not None and canary.refused[0] == 1
    assert (canary.stable, canary.candidate, canary.weight) == (0, None, 0)
    assert canary.status.refused_snapshot == 1 and canary.status.phase is Phase.DEGRADED
    record = next(r for r in decision.status.snapshots if r.version == 1)
    assert record.verdict is SnapshotVerdict.BAD and "snapshot canary" in (record.reason or "")
    assert c.pinned == 0 and "SnapshotRefused" in c.events
    c.obey(canary)
    _, canary = c.tick()  # nothing newer: the refusal stands, the refused snapshot is not tried again
    assert canary.candidate is None and canary.status.phase is Phase.DEGRADED
    c.snapshots.append(snap(2, 400))
    _, canary = c.tick()  # a newer snapshot gets its own canary
    assert canary.candidate == 2 and canary.status.refused_snapshot is None


def test_a_candidate_stays_the_target_while_newer_snapshots_are_published():
    c = Canary(deployment())
    c.tick()
    promote_to_step(c)
    c.snapshots += [snap(2, 400), snap(3, 600)]
    _, canary = c.tick(30, analysis=Verdict.PASS)
    assert canary.candidate == 1 and canary.weight == 20


def test_a_snapshot_the_guard_judged_bad_gets_no_canary():
    c = Canary(deployment())
    c.tick()
    c.snapshots.append(snap(1, 200, accuracy=0.3))
    _, canary = c.tick()
    assert canary.candidate is None and canary.stable == 0


def test_a_hold_withdraws_the_candidate_and_keeps_the_stable_snapshot():
    c = Canary(deployment())
    c.tick()
    promote_to_step(c)
    learning = c.md.spec.learning
    status = c.status
    assert learning is not None and status is not None and status.canary is not None
    seen = CanaryObservation(True, True, 1, (80, 20), hold="the rollout of model revision abc is in flight")
    records = {r.version: r for r in status.snapshots}
    canary = decide_canary(c.md, status.canary, records, 0, seen, c.now + timedelta(seconds=1))
    assert canary is not None
    assert (canary.stable, canary.candidate, canary.weight) == (0, None, 0)
    assert any("withdrawn" in e.message and "model revision abc" in e.message for e in canary.events)


def test_promotion_canary_needs_router_traffic_and_checks():
    ok = deployment()
    assert learning_refusal(ok.spec) is None
    no_checks = deployment(canary={"steps": [{"weight": 20, "duration": "1m"}]})
    assert "spec.learning.canary.analysis" in (learning_refusal(no_checks.spec) or "")
    document = ok.model_dump(mode="json", by_alias=True, exclude_none=True)
    document["spec"]["traffic"] = {"provider": "IngressNginx"}
    gateway = ModelDeployment.model_validate(document)
    assert "traffic provider IngressNginx" in (learning_refusal(gateway.spec) or "")


def test_the_canary_example_is_valid_and_accepted():
    example = Path(__file__).parents[3] / "examples/online-learning/modeldeployment-canary.yaml"
    md = ModelDeployment.model_validate(yaml.safe_load(example.read_text()))
    assert learning_refusal(md.spec) is None
    assert md.spec.learning is not None and md.spec.learning.canary is not None


def test_the_canary_block_needs_promotion_canary():
    with pytest.raises(ValueError, match="canary: set promotion: Canary"):
        deployment(promotion="Direct")


def test_snapshot_retention_must_reach_past_the_guard_window():
    # the kept snapshots must reach back over the guard's window (100) and two snapshots more
    assert learning_refusal(deployment(snapshots={"keep": 3}).spec) is None
    refused = learning_refusal(deployment(snapshots={"keep": 2}).spec) or ""
    assert "spec.learning.snapshots.keep" in refused and "keep at least 3" in refused
    short = deployment(snapshots={"keep": 3}, snapshotEvery=50)
    assert "keep at least 4" in (learning_refusal(short.spec) or "")
    assert learning_refusal(deployment(snapshots={"keep": 4}, snapshotEvery=50).spec) is None


def test_the_route_splits_only_the_stable_revision_and_the_rollout_sees_it_whole():
    traffic = SnapshotTraffic("r1", weight=20)
    assert route_weights({"r1": 100}, None, traffic) == ({"r1": 80, "r1-candidate": 20}, None)
    shadowed = SnapshotTraffic("r1", weight=0, shadow=10)
    assert route_weights({"r1": 100}, None, shadowed) == (
        {"r1": 100, "r1-candidate": 0},
        ("r1-candidate", 10),
    )
    # a model rollout in flight: its weights go out as they are
    assert route_weights({"r1": 90, "r2": 10}, None, traffic) == ({"r1": 90, "r2": 10}, None)
    folded, split = fold_candidate_split(Readback({"r1": 80, "r1-candidate": 20}), "r1")
    assert folded.confirmed == {"r1": 100} and split == (80, 20)
    folded, split = fold_candidate_split(Readback(None), "r1")
    assert folded.confirmed is None and split is None
