"""The join buffer: outcomes, expiry, bounded memory, tick by tick with a fixed clock."""

from __future__ import annotations

from typing import Any

import pytest
from learning_testing import logged

from mlserving.learning.join import FeedbackOutcome, JoinBuffer
from mlserving.learning.records import LoggedRequest, RecordError


def one_label(label: Any, request: LoggedRequest) -> tuple[Any, ...]:
    if label not in (0, 1):
        raise RecordError(f"label: {label!r} is not one of the model's classes [0, 1]")
    return (label,)


def test_feedback_within_max_delay_joins_and_leaves_the_buffer():
    buffer = JoinBuffer(max_delay=60, max_entries=10)
    assert buffer.add(logged("a", [1.0, 2.0], at=100.0, prediction=1, snapshot=3), now=100.0)
    result = buffer.join("a", 0, now=159.0, check=one_label)
    assert result.outcome is FeedbackOutcome.JOINED
    assert result.joined is not None
    assert result.joined.labels == (0,)
    assert result.joined.labelled_at == 159.0
    assert result.joined.request.snapshot == 3
    assert result.joined.request.prediction == (1,)
    assert len(buffer) == 0
    assert buffer.stats.joined == 1


def test_unknown_id_is_counted_and_named():
    buffer = JoinBuffer(max_delay=60, max_entries=10)
    result = buffer.join("forged", 1, now=0.0, check=one_label)
    assert result.outcome is FeedbackOutcome.UNKNOWN
    assert result.error.startswith("id: 'forged'")
    assert buffer.stats.unknown == 1
    assert not buffer.knows("forged")


def test_second_feedback_for_one_request_is_a_duplicate():
    buffer = JoinBuffer(max_delay=60, max_entries=10)
    buffer.add(logged("a", [1.0], at=0.0), now=0.0)
    assert buffer.join("a", 1, now=1.0, check=one_label).outcome is FeedbackOutcome.JOINED
    again = buffer.join("a", 1, now=2.0, check=one_label)
    assert again.outcome is FeedbackOutcome.DUPLICATE
    assert "already has feedback" in again.error
    assert buffer.stats.duplicate == 1
    assert buffer.stats.joined == 1


def test_feedback_after_max_delay_is_late():
    buffer = JoinBuffer(max_delay=60, max_entries=10)
    buffer.add(logged("a", [1.0], at=0.0), now=0.0)
    result = buffer.join("a", 1, now=60.5, check=one_label)
    assert result.outcome is FeedbackOutcome.LATE
    assert "within 60 s" in result.error
    assert buffer.stats.late == 1
    assert buffer.stats.expired == 1
    assert len(buffer) == 0
    # Still late (not unknown) when asked again: the id is remembered as expired.
    assert buffer.join("a", 1, now=61.0, check=one_label).outcome is FeedbackOutcome.LATE


def test_expiry_runs_as_time_passes():
    buffer = JoinBuffer(max_delay=10, max_entries=10)
    buffer.add(logged("old", [1.0], at=0.0), now=0.0)
    buffer.add(logged("new", [1.0], at=8.0), now=8.0)
    assert len(buffer) == 2
    buffer.add(logged("newest", [1.0], at=10.5), now=10.5)
    assert len(buffer) == 2  # "old" expired at t=10
    assert buffer.stats.expired == 1
    assert buffer.expire(now=18.5) == 1  # "new" expired at t=18
    assert buffer.join("newest", 0, now=19.0, check=one_label).outcome is FeedbackOutcome.JOINED


def test_memory_is_bounded_by_evicting_the_oldest():
    buffer = JoinBuffer(max_delay=3600, max_entries=3)
    for index in range(5):
        buffer.add(logged(f"r{index}", [float(index)], at=float(index)), now=float(index))
    assert len(buffer) == 3
    assert buffer.stats.evicted == 2
    evicted = buffer.join("r0", 1, now=6.0, check=one_label)
    assert evicted.outcome is FeedbackOutcome.LATE
    assert "more than 3 requests were waiting" in evicted.error
    assert buffer.join("r4", 1, now=6.0, check=one_label).outcome is FeedbackOutcome.JOINED


def test_remembered_ids_are_bounded_too():
    buffer = JoinBuffer(max_delay=3600, max_entries=2)
    for name in ("a", "b", "c"):
        buffer.add(logged(name, [1.0], at=0.0), now=0.0)
        buffer.join(name, 1, now=1.0, check=one_label)
    # "a" was forgotten to keep memory bounded: it is unknown now, not a duplicate.
    assert buffer.join("a", 1, now=2.0, check=one_label).outcome is FeedbackOutcome.UNKNOWN
    assert buffer.join("c", 1, now=2.0, check=one_label).outcome is FeedbackOutcome.DUPLICATE


def test_an_invalid_label_keeps_the_request_waiting():
    buffer = JoinBuffer(max_delay=60, max_entries=10)
    buffer.add(logged("a", [1.0], at=0.0), now=0.0)
    bad = buffer.join("a", "cat", now=1.0, check=one_label)
    assert bad.outcome is FeedbackOutcome.INVALID
    assert bad.error.startswith("label: 'cat'")
    assert buffer.stats.invalid == 1
    assert len(buffer) == 1
    assert buffer.join("a", 1, now=2.0, check=one_label).outcome is FeedbackOutcome.JOINED


def test_a_request_logged_twice_is_kept_once():
    buffer = JoinBuffer(max_delay=60, max_entries=10)
    assert buffer.add(logged("a", [1.0], at=0.0), now=0.0)
    assert not buffer.add(logged("a", [2.0], at=0.0), now=1.0)
    assert buffer.stats.relogged == 1
    joined = buffer.join("a", 1, now=2.0, check=one_label).joined
    assert joined is not None and joined.request.features.tolist() == [[1.0]]
    assert not buffer.add(logged("a", [3.0], at=0.0), now=3.0)  # already joined: a replica retry


def test_a_request_older_than_max_delay_on_arrival_is_not_kept():
    buffer = JoinBuffer(max_delay=60, max_entries=10)
    assert not buffer.add(logged("stale", [1.0], at=0.0), now=100.0)
    assert len(buffer) == 0
    assert buffer.join("stale", 1, now=100.0, check=one_label).outcome is FeedbackOutcome.LATE


def test_outcome_counts_match_the_metric_labels():
    buffer = JoinBuffer(max_delay=60, max_entries=10)
    buffer.add(logged("a", [1.0], at=0.0), now=0.0)
    buffer.join("a", 7, now=1.0, check=one_label)
    buffer.join("a", 1, now=1.0, check=one_label)
    buffer.join("zzz", 1, now=1.0, check=one_label)
    assert buffer.stats.feedback_outcomes() == {
        "joined": 1,
        "late": 0,
        "unknown": 1,
        "duplicate": 0,
        "invalid": 1,
    }


@pytest.mark.parametrize(("max_delay", "max_entries"), [(0, 10), (-1, 10), (10, 0)])
def test_bad_limits_are_refused(max_delay, max_entries):
    with pytest.raises(ValueError, match=r"max_delay|max_entries"):
        JoinBuffer(max_delay=max_delay, max_entries=max_entries)
