"""A new snapshot lineage (new initial model, e.g. a new spec.model revision) resets the guard: a
pin or a breach of the old lineage never holds the new one back."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from mlrollouts.api.modeldeployment import Learning, PinSource, SnapshotVerdict
from mlrollouts.learning import LearnerReport, SnapshotInfo, decide_learning

T0 = datetime(2026, 3, 2, 9, 0, 0, tzinfo=UTC)
OLD, NEW = "1" * 64, "2" * 64
GUARDED = Learning.model_validate(
    {
        "enabled": True,
        "storage": {"uri": "file:///tmp/store"},
        "guard": {"metric": "accuracy", "min": 0.8, "window": 100, "minSamples": 50},
    }
)


def snap(version: int, samples: int, accuracy: float, lineage: str) -> SnapshotInfo:
    return SnapshotInfo(version=version, samples=samples, metrics={"accuracy": accuracy}, lineage=lineage)


def report(samples, accuracy, snapshots, lineage, pinned=None) -> LearnerReport:
    latest = snapshots[-1].version
    return LearnerReport(
        ready=True,
        samples=samples,
        metrics={"accuracy": accuracy},
        latest=latest,
        serving=pinned if pinned is not None else latest,
        pinned=pinned,
        snapshots=tuple(snapshots),
        lineage=lineage,
    )


def test_a_guard_pin_of_the_old_lineage_does_not_pin_the_new_one():
    old = [snap(0, 0, 0.9, OLD), snap(1, 200, 0.9, OLD), snap(2, 400, 0.3, OLD)]
    first = decide_learning(GUARDED, None, report(400, 0.3, old, OLD), T0)
    assert first.pin == 1 and first.status.pinned_by is PinSource.GUARD
    assert first.status.lineage == OLD[:16] and first.status.lineage_start == 0

    # a new spec.model revision: the learner restarts on a new lineage, numbered after the old one
    new = [*old, snap(3, 0, 0.9, NEW), snap(4, 60, 0.85, NEW), snap(5, 120, 0.92, NEW)]
    second = decide_learning(
        GUARDED, first.status, report(120, 0.92, new, NEW, pinned=1), T0 + timedelta(seconds=1)
    )
    assert second.pin is None and second.pin_changed  # the learner is asked to unpin
    assert second.status.breached_at_samples is None
    assert second.status.lineage == NEW[:16] and second.status.lineage_start == 3
    assert second.status.last_good_snapshot == 5
    reasons = [e.reason for e in second.events]
    assert "LineageStarted" in reasons and "SnapshotUnpinned" in reasons
    verdicts = {r.version: r.verdict for r in second.status.snapshots}
    # the old lineage's bad snapshot stays bad; the new lineage is judged on its own metrics
    assert verdicts[2] is SnapshotVerdict.BAD
    assert verdicts[4] is SnapshotVerdict.GOOD and verdicts[5] is SnapshotVerdict.GOOD


def test_a_person_s_pin_survives_a_new_lineage():
    old = [snap(0, 0, 0.9, OLD), snap(1, 200, 0.9, OLD)]
    pinned = GUARDED.model_copy(update={"pinned_snapshot": 0})
    first = decide_learning(pinned, None, report(200, 0.9, old, OLD), T0)
    assert first.pin == 0 and first.status.pinned_by is PinSource.USER
    new = [*old, snap(2, 0, 0.9, NEW)]
    second = decide_learning(pinned, first.status, report(0, 0.9, new, NEW, pinned=0), T0)
    assert second.pin == 0 and not second.pin_changed


def test_the_same_lineage_keeps_the_guard_memory():
    old = [snap(0, 0, 0.9, OLD), snap(1, 200, 0.9, OLD), snap(2, 400, 0.3, OLD)]
    first = decide_learning(GUARDED, None, report(400, 0.3, old, OLD), T0)
    second = decide_learning(GUARDED, first.status, report(420, 0.5, old, OLD, pinned=1), T0)
    assert second.pin == 1 and second.status.breached_at_samples is not None
    assert "LineageStarted" not in [e.reason for e in second.events]
