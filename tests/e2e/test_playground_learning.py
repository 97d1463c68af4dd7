"""Online learning on the local playground, end to end: the learning scenario of `make demo`.

One playground (API emulator, Prometheus, process kubelet, operator, a learner, model servers and
routers as processes) serves the module. The scenario's steps run one by one: both models come up,
the drifting stream goes through the routers, the online model's snapshots follow the drift while
the static copy degrades, and a burst of flipped labels is rolled back by the guard — checked from
the client's answers, the resource's status and events, and `mlrollouts learning history`.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from mlrollouts.local import demo_learning
from mlrollouts.local.demo_scenario import DemoContext
from mlrollouts.local.drift import accuracy
from mlrollouts.local.playground import Playground
from mlserving.learning.export import read_learner_state_file, retrain
from support import require_binary

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ONLINE_AFTER_DRIFT = 0.90
STATIC_AFTER_DRIFT = 0.65
"""The static copy keeps about 1 - 75/180 = 0.58 of its accuracy after the boundary turns by 75°."""


@pytest.fixture(scope="module")
def scenario(tmp_path_factory):
    require_binary("prometheus")
    root = tmp_path_factory.mktemp("learning")
    playground = Playground(root / "state").start()
    context = DemoContext(playground)
    scenario = demo_learning.build(context, root / "models")
    try:
        yield scenario
    finally:
        scenario.stop()
        playground.stop()


@pytest.fixture(scope="module")
def learning_cli(scenario):
    """`mlrollouts learning COMMAND NAME ...` as a user runs it against the playground."""

    def run(command: str, *args: str) -> str:
        result = subprocess.run(
            [
                *(sys.executable, "-m", "mlrollouts.cli.main", "learning", command, scenario.name, *args),
                *("--kubeconfig", str(scenario.playground.kubeconfig), "-n", scenario.namespace),
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
        return result.stdout

    return run


def test_snapshots_follow_the_drift_and_the_static_copy_degrades(scenario):
    scenario.bring_up()
    scenario.stream.start()
    online, static = scenario.follow_drift()
    schedule, outcomes = scenario.stream.schedule, scenario.stream.outcomes

    assert accuracy(outcomes, "online", 0, schedule.drift_at) >= 0.95
    assert accuracy(outcomes, "static", 0, schedule.drift_at) >= 0.95
    assert online >= ONLINE_AFTER_DRIFT, (online, static)
    assert static <= STATIC_AFTER_DRIFT, (online, static)

    # snapshots were published and every response names the one that answered it, in order
    learning = scenario.status()["learning"]
    assert learning["latestSnapshot"] >= 10 and learning["servingSnapshot"] >= learning["latestSnapshot"] - 1
    served = [o.snapshot for o in sorted(outcomes, key=lambda o: o.t) if o.snapshot is not None]
    assert len(set(served)) >= 8 and served[0] == 0
    assert max(served) >= learning["latestSnapshot"] - 1
    assert all(o.feedback == 200 for o in outcomes if o.online is not None), {o.feedback for o in outcomes}
    assert scenario.stream.transport_errors == 0


def test_a_poisoned_burst_is_rolled_back_to_the_last_good_snapshot(scenario, learning_cli):
    before_burst = scenario.status()["learning"]["latestSnapshot"]
    scenario.catch_poisoned_burst()
    rollback = scenario.rollback
    assert rollback["pinned"] <= before_burst
    assert 0 < rollback["poisoned_sent"] <= scenario.stream.schedule.poisoned  # during the burst

    status = scenario.status()
    learning = status["learning"]
    assert learning["pinnedBy"] == "Guard" and learning["pinned"] == rollback["pinned"]
    assert learning["lastGoodSnapshot"] == rollback["pinned"]
    condition = next(c for c in status["conditions"] if c["type"] == "LearningHealthy")
    assert condition["status"] == "False" and condition["reason"] == "GuardBreached", condition
    assert status["phase"] == "Healthy"  # the model keeps serving: the last good snapshot
    reasons = {line.split(":", 1)[0] for line in scenario.events()}
    assert {"SnapshotPublished", "GuardBreached", "SnapshotPinned"} <= reasons, reasons

    shown = learning_cli("history")
    assert f"pinned by Guard to {rollback['pinned']}" in shown
    rows = {line.split()[0]: line for line in shown.splitlines()[2:] if line.split()}
    assert "serving" in rows[str(rollback["pinned"])] and "Good" in rows[str(rollback["pinned"])]
    assert any("Bad" in line for line in rows.values()), shown


def test_serving_stays_on_the_pinned_snapshot_until_the_learner_recovers(scenario, learning_cli):
    scenario.recover()
    rollback, outcomes = scenario.rollback, scenario.stream.outcomes
    pinned_span = [o for o in outcomes if rollback["t"] + 2 <= o.t <= rollback["released_t"] - 2]
    assert pinned_span, rollback
    assert {o.snapshot for o in pinned_span} == {rollback["pinned"]}
    hits = sum(o.online == o.label for o in pinned_span)
    assert hits / len(pinned_span) >= 0.85  # clients got the good model while the learner was poisoned

    learning = scenario.status()["learning"]
    assert learning.get("pinned") is None and learning["servingSnapshot"] > rollback["pinned"]
    reasons = {line.split(":", 1)[0] for line in scenario.events()}
    assert "SnapshotUnpinned" in reasons, reasons
    tail = accuracy(outcomes, "online", scenario.stream.schedule.total - 200)
    assert tail is not None and tail >= ONLINE_AFTER_DRIFT
    assert "Bad" in learning_cli("history")  # the poisoned snapshots stay marked


def test_the_last_good_snapshot_is_reproduced_from_its_exported_rows(scenario, learning_cli, tmp_path):
    pinned = scenario.rollback["pinned"]
    out = tmp_path / "export"
    said = learning_cli("export", "--snapshot", str(pinned), "--output", str(out))
    assert f"snapshot {pinned} of {scenario.name} exported" in said
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["version"] == pinned
    assert f"data version {manifest['data_version']})" in said
    snapshot_model = read_learner_state_file(out)["estimator"]
    retrained = retrain(out)
    np.testing.assert_array_equal(retrained.coef_, snapshot_model.coef_)
    np.testing.assert_array_equal(retrained.intercept_, snapshot_model.intercept_)
