"""The learning decisions, pass by pass with a fixed clock: what the status says, which pin the
learner must hold, which events go out and how ``LearningHealthy`` reads after each tick."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from mlrollouts.api.modeldeployment import Learning, LearningStatus, PinSource, SnapshotVerdict
from mlrollouts.core.conditions import ConditionStatus
from mlrollouts.learning import (
    LEARNING_HEALTHY,
    MAX_SNAPSHOT_RECORDS,
    LearnerReport,
    LearningDecision,
    SnapshotInfo,
    Unreachable,
    decide_learning,
)

T0 = datetime(2026, 3, 2, 9, 0, 0, tzinfo=UTC)
GUARDED = {
    "enabled": True,
    "storage": {"uri": "file:///tmp/store"},
    "snapshotEvery": 50,
    "guard": {"metric": "accuracy", "min": 0.8, "window": 100, "minSamples": 50},
}


def spec(**changes) -> Learning:
    return Learning.model_validate({**GUARDED, **changes})


def snap(version: int, samples: int, accuracy: float | None = None) -> SnapshotInfo:
    return SnapshotInfo(
        version=version,
        parent=version - 1 if version else None,
        created=T0 + timedelta(seconds=version),
        samples=samples,
        metrics={} if accuracy is None else {"accuracy": accuracy},
        data_version=version * 2,
        data_seq_start=0,
        data_seq_end=samples,
    )


def report(samples: int, accuracy: float, snapshots, *, pinned: int | None = None, **extra) -> LearnerReport:
    latest = max(s.version for s in snapshots)
    return LearnerReport(
        ready=extra.pop("ready", True),
        samples=samples,
        metrics={"accuracy": accuracy},
        latest=latest,
        serving=pinned if pinned is not None else latest,
        pinned=pinned,
        snapshots=tuple(snapshots),
        data_version=latest * 2,
        **extra,
    )


class Learner:
    """Drives decisions tick by tick, carrying status and conditions as the controller does."""

    def __init__(self, learning: Learning) -> None:
        self.spec = learning
        self.status: LearningStatus | None = None
        self.conditions: list = []
        self.tick = 0

    def step(self, observed: LearnerReport | Unreachable) -> LearningDecision:
        self.tick += 1
        decision = decide_learning(
            self.spec, self.status, observed, T0 + timedelta(seconds=self.tick), conditions=self.conditions
        )
        self.status = decision.status
        self.conditions = [decision.condition]
        return decision


def reasons(decision: LearningDecision) -> list[str]:
    return [e.reason for e in decision.events]


def verdicts(status: LearningStatus) -> dict[int, SnapshotVerdict | None]:
    return {r.version: r.verdict for r in status.snapshots}


def test_first_contact_lists_the_snapshots_and_reports_healthy_learning():
    learner = Learner(spec())
    decision = learner.step(report(120, 0.93, [snap(0, 0), snap(1, 50, 0.9), snap(2, 100, 0.92)]))
    status = decision.status
    assert (status.latest_snapshot, status.serving_snapshot, status.last_good_snapshot) == (2, 2, 2)
    assert (status.pinned, decision.pin, decision.pin_changed) == (None, None, False)
    assert verdicts(status) == {0: "Unjudged", 1: "Good", 2: "Good"}
    assert status.snapshots[2].data_version == 4 and status.snapshots[2].data_range == "[0, 100)"
    assert (status.samples, status.metrics) == (120, {"accuracy": 0.93})
    assert reasons(decision) == ["SnapshotPublished"]
    assert "snapshots 0..2 published" in decision.events[0].message
    assert decision.condition.type == LEARNING_HEALTHY
    assert (decision.condition.status, decision.condition.reason) == (ConditionStatus.TRUE, "Learning")


def test_a_poisoned_burst_pins_the_last_good_snapshot_until_a_full_clean_window_passes():
    learner = Learner(spec())
    history = [snap(0, 0), snap(1, 50, 0.9), snap(2, 100, 0.92)]
    learner.step(report(120, 0.93, history))

    # tick 2: flipped labels; the learner's window (100 samples) now breaches the guard
    history += [snap(3, 150, 0.85), snap(4, 200, 0.6)]
    breached = learner.step(report(200, 0.6, history))
    assert breached.pin == 2 and breached.pin_changed  # learned none of samples 100..200
    assert reasons(breached) == ["SnapshotPublished", "GuardBreached", "SnapshotPinned"]
    assert breached.events[1].type == "Warning" and "accuracy 0.6 < min 0.8" in breached.events[1].message
    status = breached.status
    assert (status.pinned, status.pinned_by, status.serving_snapshot) == (2, PinSource.GUARD, 2)
    assert (status.last_good_snapshot, status.breached_at_samples) == (2, 200)
    assert verdicts(status) == {0: "Unjudged", 1: "Good", 2: "Good", 3: "Bad", 4: "Bad"}
    assert (breached.condition.status, breached.condition.reason) == (ConditionStatus.FALSE, "GuardBreached")

    # tick 3: the learner holds the pin; the burst goes on: no second breach or pin event
    history += [snap(5, 250, 0.65)]
    held = learner.step(report(260, 0.7, history, pinned=2))
    assert (held.pin, held.pin_changed) == (2, False)
    assert reasons(held) == ["SnapshotPublished"]
    assert held.status.breached_at_samples == 260
    assert held.condition.last_transition_time == breached.condition.last_transition_time

    # ticks 4-5: the labels are clean again, but these snapshots learned from the burst's window
    history += [snap(6, 300, 0.85)]
    assert learner.step(report(320, 0.9, history, pinned=2)).pin == 2
    history += [snap(7, 350, 0.9)]
    still = learner.step(report(380, 0.95, history, pinned=2))
    assert still.pin == 2 and still.condition.reason == "GuardBreached"
    assert verdicts(still.status)[6] == verdicts(still.status)[7] == "Bad"

    # tick 6: a snapshot that learned a full window after the last breach passes: unpin
    history += [snap(8, 400, 0.95)]
    recovered = learner.step(report(420, 0.95, history, pinned=2))
    assert (recovered.pin, recovered.pin_changed) == (None, True)
    assert reasons(recovered) == ["SnapshotPublished", "SnapshotUnpinned"]
    assert "snapshot 8" in recovered.events[1].message
    status = recovered.status
    assert (status.pinned, status.serving_snapshot, status.last_good_snapshot) == (None, 8, 8)
    assert status.breached_at_samples is None
    assert [v for v, verdict in verdicts(status).items() if verdict == "Bad"] == [3, 4, 5, 6, 7]
    assert (recovered.condition.status, recovered.condition.reason) == (ConditionStatus.TRUE, "Learning")


def test_a_bad_mark_is_final_even_when_the_learner_lists_the_snapshot_again():
    learner = Learner(spec())
    history = [snap(0, 0), snap(1, 100, 0.9), snap(2, 200, 0.5)]
    learner.step(report(200, 0.5, history))
    assert verdicts(learner.status)[2] == "Bad"
    for samples in (500, 600):  # recovered long after
        history.append(snap(len(history), samples, 0.95))
        decision = learner.step(report(samples, 0.95, history, pinned=learner.status.pinned))
    assert decision.status.breached_at_samples is None
    assert verdicts(decision.status)[2] == "Bad"
    assert decision.status.last_good_snapshot == 4


def test_a_snapshot_whose_own_metrics_breach_triggers_the_guard_between_two_passes():
    learner = Learner(spec())
    learner.step(report(100, 0.9, [snap(0, 0), snap(1, 100, 0.9)]))
    # the burst came and went between two passes: only snapshot 2's manifest saw it
    decision = learner.step(report(260, 0.9, [snap(0, 0), snap(1, 100, 0.9), snap(2, 200, 0.55)]))
    assert decision.pin == 1 and decision.status.breached_at_samples == 200
    assert "GuardBreached" in reasons(decision)


def test_metrics_before_min_samples_are_not_judged():
    learner = Learner(spec())
    decision = learner.step(report(30, 0.2, [snap(0, 0), snap(1, 30, 0.2)]))
    assert decision.pin is None and decision.status.breached_at_samples is None
    assert verdicts(decision.status)[1] == "Unjudged"
    assert decision.condition.reason == "Learning"


def test_a_person_pin_wins_over_the_guard_and_the_guard_pin_returns_once_it_is_unset():
    learner = Learner(spec())
    history = [snap(0, 0), snap(1, 100, 0.9), snap(2, 200, 0.92), snap(3, 300, 0.5)]
    assert learner.step(report(300, 0.5, history)).pin == 2
    learner.spec = spec(pinnedSnapshot=0)
    pinned = learner.step(report(310, 0.5, history, pinned=2))
    assert (pinned.pin, pinned.pin_changed, pinned.status.pinned_by) == (0, True, PinSource.USER)
    assert (
        reasons(pinned) == ["SnapshotPinned"] and "spec.learning.pinnedSnapshot" in pinned.events[0].message
    )
    learner.spec = spec()
    back = learner.step(report(320, 0.5, history, pinned=0))
    assert (back.pin, back.status.pinned_by) == (2, PinSource.GUARD)


def test_a_person_pin_without_a_guard_holds_serving_and_says_so():
    learner = Learner(spec(guard=None, pinnedSnapshot=1))
    decision = learner.step(report(150, 0.4, [snap(0, 0), snap(1, 50, 0.4), snap(2, 100, 0.3)]))
    assert (decision.pin, decision.status.serving_snapshot) == (1, 1)
    assert verdicts(decision.status) == {0: None, 1: None, 2: None}
    assert (decision.condition.status, decision.condition.reason) == (ConditionStatus.TRUE, "Pinned")


def test_a_pin_to_an_unpublished_snapshot_is_refused_naming_the_field():
    learner = Learner(spec(pinnedSnapshot=7))
    decision = learner.step(report(60, 0.9, [snap(0, 0), snap(1, 50, 0.9)]))
    assert (decision.pin, decision.pin_changed) == (None, False)
    assert decision.condition.reason == "PinRefused"
    assert decision.condition.message.startswith("spec.learning.pinnedSnapshot: snapshot 7 is not published")


def test_an_unreachable_learner_keeps_the_status_and_is_reported_once():
    learner = Learner(spec())
    starting = learner.step(Unreachable("connection refused"))
    assert (
        starting.condition.status == ConditionStatus.UNKNOWN
        and starting.condition.reason == "LearnerStarting"
    )
    assert starting.events == ()
    learner.step(report(120, 0.93, [snap(0, 0), snap(1, 100, 0.9)]))
    down = learner.step(Unreachable("timed out after 2s"))
    assert (down.condition.status, down.condition.reason) == (ConditionStatus.FALSE, "LearnerUnavailable")
    assert reasons(down) == ["LearnerUnavailable"] and "timed out" in down.events[0].message
    assert (down.status.latest_snapshot, down.status.samples, down.pin_changed) == (1, 120, False)
    again = learner.step(Unreachable("timed out after 2s"))
    assert again.events == ()
    assert again.condition.last_transition_time == down.condition.last_transition_time


def test_a_resuming_learner_or_one_without_storage_changes_no_pin():
    learner = Learner(spec())
    learner.step(report(300, 0.4, [snap(0, 0), snap(1, 100, 0.9), snap(2, 300, 0.4)]))
    assert learner.status.pinned == 1
    resuming = learner.step(report(0, 0.0, [snap(0, 0)], ready=False))
    assert (resuming.pin, resuming.pin_changed, resuming.condition.reason) == (1, False, "LearnerNotReady")
    assert resuming.status.latest_snapshot == 2
    learner2 = Learner(spec(guard=None))
    broken = learner2.step(
        report(10, 0.9, [snap(0, 0)], storage_available=False, storage_error="append: OSError: disk full")
    )
    assert (broken.condition.status, broken.condition.reason) == (ConditionStatus.FALSE, "StorageUnavailable")
    assert "disk full" in broken.condition.message


def test_the_status_lists_only_the_newest_snapshots():
    learner = Learner(spec(guard=None))
    history = [snap(v, v * 50, 0.9) for v in range(MAX_SNAPSHOT_RECORDS + 7)]
    decision = learner.step(report(2000, 0.9, history))
    listed = [r.version for r in decision.status.snapshots]
    assert listed == list(range(7, MAX_SNAPSHOT_RECORDS + 7))
