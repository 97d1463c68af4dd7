"""The playground supervisor's restart back-off: doubling from 1 s to 30 s, and back to 1 s once a
child has run long enough (as the kubelet's crash-loop back-off does)."""

from __future__ import annotations

from pathlib import Path

from mlrollouts.local.playground import BACKOFF_MAX, Child


def crash_after(child: Child, started: float, ran: float, reset_after: float) -> float:
    child.started_at = started
    return child.backoff(started + ran, reset_after)


def test_back_off_doubles_up_to_the_maximum_while_the_child_keeps_crashing(tmp_path: Path) -> None:
    child = Child("operator", ["true"], tmp_path / "log")
    delays = [crash_after(child, 100.0 * i, ran=1.0, reset_after=600.0) for i in range(8)]
    assert delays == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]
    assert BACKOFF_MAX == 30.0
    assert child.restarts == 8


def test_back_off_starts_again_from_one_second_after_a_long_enough_run(tmp_path: Path) -> None:
    child = Child("operator", ["true"], tmp_path / "log")
    for i in range(6):
        crash_after(child, 10.0 * i, ran=1.0, reset_after=600.0)
    assert crash_after(child, 1000.0, ran=599.0, reset_after=600.0) == 30.0
    assert crash_after(child, 2000.0, ran=600.0, reset_after=600.0) == 1.0
    assert crash_after(child, 3000.0, ran=5.0, reset_after=600.0) == 2.0
    assert child.restarts == 9  # the total stays, as a pod's restartCount does
