"""The local playground end to end: the scenario of `make demo`, checked from the API and the client.

One playground (API emulator, Prometheus, process kubelet, operator, real model servers and a real
router) serves the whole module; the tests run in order on it: the canary of `make demo` (v2
promoted, a broken v3 rolled back), kubectl against the playground, then a rollout that survives a
SIGKILL of a serving process and of the operator.
"""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
from collections import Counter
from pathlib import Path

import pytest

from mlrollouts.core.names import API_VERSION
from mlrollouts.local.demo_canary import CanaryScenario, train_demo_models
from mlrollouts.local.demo_scenario import DemoContext, entry_point
from mlrollouts.local.playground import Playground
from support import require_binary, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    require_binary("prometheus")
    root = tmp_path_factory.mktemp("playground")
    models = train_demo_models(root / "models")
    playground = Playground(root / "state").start()
    demo = CanaryScenario(DemoContext(playground), models)
    try:
        yield demo
    finally:
        demo.traffic.stop()
        playground.stop()


def answers_between(demo: CanaryScenario, predicate) -> Counter:
    """Answers the client got while ``predicate(weights)`` held (difference of the running counts)."""
    spans = [(w, c) for _, w, c in demo.answers]
    total: Counter = Counter()
    for (weights, before), (_, after) in itertools.pairwise(spans):
        if predicate(weights):
            total.update(after - before)
    return total


def test_canary_promotes_v2_and_rolls_back_broken_v3(demo):
    demo.run()
    kube, ns, name = demo.kube, demo.namespace, demo.name
    status = demo.status()
    v2 = status["stableRevision"]
    v3 = status["failedRevision"]
    assert demo.labels[v2] == "v2" and v3 and v3 != v2
    assert status["phase"] == "Degraded"
    assert {w["revision"]: w["desired"] for w in status["weights"]}.get(v3, 0) == 0
    conditions = {c["type"]: c for c in status["conditions"]}
    assert conditions["Degraded"]["status"] == "True"
    assert any(r["verdict"] == "Fail" and r["check"] == "errors" for r in status["analysis"]["runs"])

    # the rollout history and the events tell the same story
    outcomes = {r["revision"]: r.get("outcome") for r in status["revisions"]}
    assert outcomes.get(v3) == "RolledBack", status["revisions"]
    reasons = {e.get("reason") for e in kube.list("v1", "Event", ns) if e["involvedObject"]["name"] == name}
    assert {"Promoted", "RolledBack"} <= reasons, reasons

    # children: one Deployment and Service per live revision, owned by the ModelDeployment
    deployments = {d["metadata"]["name"]: d for d in kube.list("apps/v1", "Deployment", ns)}
    assert f"{name}-{v2}" in deployments
    owner = deployments[f"{name}-{v2}"]["metadata"]["ownerReferences"][0]
    assert owner["kind"] == "ModelDeployment" and owner["name"] == name
    assert any(s["metadata"]["name"] == f"{name}-{v2}" for s in kube.list("v1", "Service", ns))
    wait_until(
        lambda: (
            (kube.get("apps/v1", "Deployment", ns, f"{name}-{v3}") or {}).get("spec", {}).get("replicas", 0)
            == 0
        ),
        timeout=60,
        message="the rolled-back revision scaled to zero",
    )

    # the client's view: about half of the answers came from v2 while the weights were 50/50, and
    # v3 answered nothing but errors, and nothing at all once rolled back
    v1 = next(r for r, label in demo.labels.items() if label == "v1")
    half = answers_between(demo, lambda w: w.get(v1) == 50 and w.get(v2) == 50)
    served = sum(n for (variant, code), n in half.items() if code == 200)
    assert served >= 50, half
    share = sum(n for (variant, code), n in half.items() if variant == v2 and code == 200) / served
    assert 0.3 <= share <= 0.7, half
    assert not any(variant == v3 and code == 200 for variant, code in demo.traffic.counts), (
        demo.traffic.counts
    )
    after = Counter(demo.traffic.counts)
    wait_until(
        lambda: sum(demo.traffic.counts.values()) > sum(after.values()) + 40,
        timeout=30,
        message="more traffic after the rollback",
    )
    assert not any(variant == v3 for variant, _ in demo.traffic.counts - after)


def test_kubectl_against_the_playground(demo, tmp_path):
    kubectl = require_binary("kubectl")
    config = str(demo.playground.kubeconfig)

    def run(*args: str) -> str:
        result = subprocess.run(
            [kubectl, "--kubeconfig", config, *args], capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 0, result.stderr
        return result.stdout

    listing = run("get", "mlrollouts")
    assert demo.name in listing and "Degraded" in listing
    assert "PHASE" in listing.upper()
    described = run("describe", "mdep", demo.name)
    assert "Stable Revision" in described or "stableRevision" in described
    example = REPO / "examples" / "canary" / "modeldeployment.yaml"
    assert "created" in run("apply", "-f", str(example))
    assert "fraud" in run("get", "mdep", "fraud", "-o", "name")
    run("delete", "-f", str(example), "--wait=false")


def serving_pids(model_path: Path) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"serve" in cmdline and any(str(model_path.resolve()).encode() in part for part in cmdline):
            pids.append(int(entry.name))
    return pids


def test_rollout_survives_sigkill_of_a_server_and_of_the_operator(demo):
    kube, ns, name = demo.kube, demo.namespace, demo.name
    v2 = demo.status()["stableRevision"]
    demo.deploy(demo.models.v1, "1")  # a new rollout, back to the v1 model
    demo.watch(
        lambda s: s.get("candidateRevision") not in (None, s.get("failedRevision")), 60, "rollout starts"
    )

    # a serving process of the stable revision crashes: the kubelet restarts it
    victims = serving_pids(demo.models.v2)
    assert victims, "no serving process of v2 found"
    os.kill(victims[0], signal.SIGKILL)
    wait_until(
        lambda: any(
            cs["restartCount"] >= 1
            for pod in kube.list("v1", "Pod", ns)
            if pod["metadata"]["name"].startswith(f"{name}-{v2}")
            for cs in pod["status"]["containerStatuses"]
        ),
        timeout=60,
        message="the killed server restarted",
    )

    # the operator dies mid-rollout at step 1; the playground restarts it and it resumes there
    demo.watch(lambda s: (s.get("currentStep") or 0) >= 1, 120, "step 1 reached")
    step_before = demo.status()["currentStep"]
    operator = demo.playground.child("operator")
    operator.popen.send_signal(signal.SIGKILL)
    operator.popen.wait(timeout=10)
    steps_seen = []
    status = demo.watch(
        lambda s: steps_seen.append(s.get("currentStep")) or s.get("phase") == "Healthy",
        180,
        "rollout after the operator restart",
    )
    assert operator.restarts >= 1
    resumed = [s for s in steps_seen if s is not None]
    assert resumed and min(resumed) >= step_before, (step_before, steps_seen)  # never went back
    assert status["stableRevision"] not in (v2, None)
    assert entry_point(kube, ns, name) is not None
    # the client kept being served through both crashes
    assert sum(n for (_, code), n in demo.traffic.counts.items() if code == 200) > 100
    assert kube.get(API_VERSION, "ModelDeployment", ns, name)["status"]["phase"] == "Healthy"
