"""Conditions: the one transition rule, the condition list, and the status of a refused resource."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from mlrollouts.core.conditions import (
    Condition,
    ConditionStatus,
    condition,
    refused_status,
    set_condition,
    transition_time,
)

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
T1 = T0 + timedelta(minutes=5)
TRUE, FALSE, UNKNOWN = ConditionStatus.TRUE, ConditionStatus.FALSE, ConditionStatus.UNKNOWN


def test_transition_time_moves_only_when_the_status_changes():
    assert transition_time("True", T0, TRUE, T1) == T0
    assert transition_time("False", T0, TRUE, T1) == T1
    assert transition_time(None, None, TRUE, T1) == T1
    assert transition_time("True", None, TRUE, T1) == T1  # never recorded: now
    assert transition_time("True", "T-old", TRUE, "T-now") == "T-old"  # any representation of time


def test_condition_keeps_its_time_through_reason_and_message_changes():
    before = [Condition("Ready", TRUE, "A", "a", T0, 1)]
    same = condition("Ready", TRUE, "B", "b", previous=before, now=T1, generation=2)
    assert same == Condition("Ready", TRUE, "B", "b", T0, 2)
    flipped = condition("Ready", FALSE, "C", "c", previous=before, now=T1, generation=2)
    assert flipped.last_transition_time == T1 and flipped.status is FALSE
    new = condition("Degraded", UNKNOWN, "D", "", previous=before, now=T1, generation=None)
    assert new.last_transition_time == T1 and new.observed_generation is None


def test_set_condition_replaces_the_type_at_the_end_and_keeps_the_others():
    before = [Condition("Ready", TRUE, "A", "", T0, 1), Condition("Progressing", TRUE, "P", "", T0, 1)]
    after = set_condition(before, "Ready", TRUE, "B", "", now=T1, generation=2)
    assert [c.type for c in after] == ["Progressing", "Ready"]
    assert after[0] is before[1]
    assert after[1].last_transition_time == T0 and after[1].reason == "B"
    assert before[0].reason == "A"  # the input is not changed


def test_refused_status_keeps_other_conditions_and_unchanged_transition_times():
    before = {
        "conditions": [
            {
                "type": "Ready",
                "status": "False",
                "reason": "NoReadyRevision",
                "lastTransitionTime": "T-ready",
            },
            {
                "type": "Progressing",
                "status": "True",
                "reason": "RolloutInProgress",
                "lastTransitionTime": "T-p",
            },
            {"type": "Degraded", "status": "False", "reason": "AsExpected", "lastTransitionTime": "T-d"},
        ],
        "stableRevision": "abc",
    }
    now = datetime(2026, 1, 1, 12, 0, 0, 654321, tzinfo=UTC)
    status = refused_status(before, 3, "spec.serving.image: not allowed", now, "ImageNotAllowed", "Degraded")
    assert status["phase"] == "Degraded"
    assert status["message"] == "ImageNotAllowed: spec.serving.image: not allowed"
    assert "stableRevision" not in status  # a merge patch: the rest of the status stays as it is
    assert [c["type"] for c in status["conditions"]] == ["Progressing", "Ready", "Degraded"]
    conditions = {c["type"]: c for c in status["conditions"]}
    assert conditions["Progressing"] == before["conditions"][1]
    assert conditions["Ready"] == {
        "type": "Ready",
        "status": "False",
        "reason": "ImageNotAllowed",
        "message": "spec.serving.image: not allowed",
        "lastTransitionTime": "T-ready",  # still False: same transition
        "observedGeneration": 3,
    }
    assert conditions["Degraded"]["status"] == "True"
    assert conditions["Degraded"]["lastTransitionTime"] == "2026-01-01T12:00:00Z"  # False -> True now


def test_refused_spec_without_phase_touches_only_ready():
    status = refused_status({}, 2, "spec.rollout.steps[0].weight: too big", T0)
    assert status == {
        "message": "invalid spec: spec.rollout.steps[0].weight: too big",
        "conditions": [
            {
                "type": "Ready",
                "status": "False",
                "reason": "InvalidSpec",
                "message": "spec.rollout.steps[0].weight: too big",
                "lastTransitionTime": "2026-01-01T12:00:00Z",
                "observedGeneration": 2,
            }
        ],
    }


def test_refused_status_stamps_utc():
    east = timezone(timedelta(hours=2))
    status = refused_status({}, 1, "bad", datetime(2026, 1, 1, 14, 0, tzinfo=east))
    assert status["conditions"][0]["lastTransitionTime"] == "2026-01-01T12:00:00Z"
