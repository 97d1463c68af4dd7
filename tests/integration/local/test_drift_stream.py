"""The drifting stream of examples/online-learning against real model servers: the example script
trains the initial model, and its stream drifts as documented — two servers of that model (neither
learns here) lose accuracy at the drift down to 1 - angle / 180."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from mlrollouts.local.drift import DriftingTask, DriftStream, Schedule, accuracy
from support.models import serving

pytestmark = pytest.mark.integration

SCRIPT = Path(__file__).resolve().parents[3] / "examples" / "online-learning" / "drift_stream.py"


def script(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=120, check=False
    )


def test_the_example_trains_a_model_that_the_drift_degrades(tmp_path):
    model = tmp_path / "drift.skops"
    trained = script("train", "--output", str(model))
    assert trained.returncode == 0, trained.stderr
    assert model.resolve().as_uri() in trained.stdout

    with (
        serving(tmp_path, model, name="drift-online") as online,
        serving(tmp_path, model, name="drift-static") as static,
    ):
        answered = script(
            "stream",
            *("--online-url", online.url, "--static-url", static.url),
            *("--before", "300", "--drifted", "600", "--poisoned", "0", "--recovery", "0", "--rate", "300"),
        )
    assert answered.returncode == 0, answered.stderr
    table = {
        line.rsplit(maxsplit=3)[0]: line.rsplit(maxsplit=3)[1:]
        for line in answered.stdout.splitlines()
        if line.startswith(("before the drift", "after the drift"))
    }
    samples, online_before, static_before = table["before the drift"]
    assert samples == "300" and float(online_before) >= 0.97 and float(static_before) >= 0.97
    samples, online_after, static_after = table["after the drift"]
    assert samples == "600"
    expected = DriftingTask().static_accuracy_after_drift  # 0.583
    assert abs(float(online_after) - expected) < 0.08 and abs(float(static_after) - expected) < 0.08


def test_the_stream_flips_labels_only_in_the_poisoned_burst(tmp_path):
    stream = DriftStream(
        task=DriftingTask(),
        schedule=Schedule(before=20, drifted=20, poisoned=20, recovery=20),
        online=lambda: None,  # no entry point: every sample is recorded unanswered
        static=lambda: None,
        online_model="m",
        static_model="m",
        rate=1000.0,
    )
    stream.start()
    assert stream.join(timeout=30)
    by_phase = {o.phase: [] for o in stream.outcomes}
    for outcome in stream.outcomes:
        by_phase[outcome.phase].append(outcome)
    assert sorted(o.index for o in stream.outcomes) == list(range(80))
    assert all(o.sent_label == 1 - o.label for o in by_phase["poisoned"])
    assert all(o.sent_label == o.label for p in ("before", "drifted", "recovery") for o in by_phase[p])
    assert all(o.online is None and o.feedback == 0 for o in stream.outcomes)
    assert accuracy(stream.outcomes, "online") is None
    assert set(stream.marks) == {"before", "drifted", "poisoned", "recovery"}
