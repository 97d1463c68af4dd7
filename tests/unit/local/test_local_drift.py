"""The drifting task of the online-learning example: the drift costs a static model what the angle
says, the schedule's phases, and accuracy as the client measures it."""

from __future__ import annotations

import numpy as np
import pytest

from mlrollouts.local.drift import ClientSample, DriftingTask, Schedule, accuracy, rolling_accuracy


def test_a_model_of_the_old_boundary_keeps_one_minus_angle_over_180():
    task = DriftingTask(angle_degrees=75)
    rng = np.random.default_rng(3)
    x, y = task.draw(rng, 40_000, drifted=True)
    old = (x @ task.normal(drifted=False) > 0).astype(int)
    assert np.mean(old == y) == pytest.approx(task.static_accuracy_after_drift, abs=0.01)
    assert task.static_accuracy_after_drift == pytest.approx(1 - 75 / 180)
    _, before = task.draw(rng, 10_000, drifted=False)
    assert 0.48 < before.mean() < 0.52  # balanced classes


def test_bad_task_and_schedule_name_the_field():
    with pytest.raises(ValueError, match="angle_degrees"):
        DriftingTask(angle_degrees=0)
    with pytest.raises(ValueError, match="features"):
        DriftingTask(features=1)
    with pytest.raises(ValueError, match="poisoned"):
        Schedule(poisoned=-1)


def test_schedule_phases_follow_each_other():
    schedule = Schedule(before=2, drifted=3, poisoned=2, recovery=1)
    assert [schedule.phase(i) for i in range(schedule.total)] == [
        "before", "before", "drifted", "drifted", "drifted", "poisoned", "poisoned", "recovery",
    ]  # fmt: skip
    assert (schedule.drift_at, schedule.poison_at, schedule.poison_end) == (2, 5, 7)


def outcome(index: int, label: int, online: int | None, static: int | None = None) -> ClientSample:
    return ClientSample(index, float(index), "drifted", label, label, online, static, None, 200)


def test_accuracy_counts_answered_samples_in_the_range():
    outcomes = [outcome(0, 1, 1), outcome(1, 1, 0), outcome(2, 0, 0), outcome(3, 0, None)]
    assert accuracy(outcomes, "online") == pytest.approx(2 / 3)
    assert accuracy(outcomes, "online", 1, 3) == pytest.approx(1 / 2)
    assert accuracy(outcomes, "static") is None


def test_rolling_accuracy_is_over_the_last_window_in_index_order():
    outcomes = [outcome(i, 1, 1 if i < 4 else 0) for i in (5, 0, 3, 1, 4, 2)]
    points = rolling_accuracy(outcomes, "online", window=2)
    assert [t for t, _ in points] == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    assert [a for _, a in points] == [1.0, 1.0, 1.0, 1.0, 0.5, 0.0]
