"""The real operator process against an API server that fails: 409 conflicts, 429 with Retry-After,
500s, slow answers and watch connections cut without a goodbye (``mlrollouts local apiserver
--faults``). Only the operator's requests are faulted (see ``FAULTS``); the test's client and the
kubelet stand-in stay reliable, so what the test reads is the truth.

The guarantees: the canary converges to Healthy; no status update is lost (the final status says
what the operator did: promoted, every step completed, the route table agrees); a ``promote``
annotation is acted on exactly once (one step advanced, one ``PromotionRequested`` event), even when
the writes around it fail."""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml
from harness import Cluster, start_operator
from rollout_support import manifest, revision_of, wait_status, with_model

from support import PYTHON, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.faults]

# The operator's own client gets the faults of its requests; kopf's client (the watches and kopf's
# progress patches) gets cut watches only. kopf retries 429 and 5xx itself, but takes a 409 on its
# own merge patch as final until the object's next event, and a real API server never answers a
# merge patch without a resourceVersion with 409.
FAULTS = "conflict=0.1,throttle=0.05,error=0.05,drop-watch=4s,slow=0.1:0.5s,agents=mlrollouts"
ACTION = "mlrollouts.io/action"
HOLD = "1h"  # a step that only a promote ends


class FaultyCluster(Cluster):
    """The operator tests' cluster with ``mlrollouts local apiserver --faults`` as its API server."""

    def __init__(self, workdir: Path, faults: str) -> None:
        self.audit_path = workdir / "audit.jsonl"
        self.faults = faults
        super().__init__(workdir, kubelet_interval=0.1)

    def emulator_argv(self) -> list[str]:
        argv = [PYTHON, "-m", "mlrollouts.cli.main", "local", "apiserver", "--port", str(self.port)]
        argv += ["--kubeconfig", str(self.kubeconfig), "--audit-log", str(self.audit_path)]
        return [*argv, "--faults", self.faults]

    def audit(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.audit_path.read_text().splitlines() if line.strip()]


@pytest.fixture
def faulty(tmp_path):
    cluster = FaultyCluster(tmp_path, FAULTS)
    operator, _ = start_operator(cluster, tmp_path, None)
    try:
        yield cluster, operator
    finally:
        operator.stop()
        cluster.stop()


def route_weights(cluster: Cluster, ns: str, name: str) -> dict[str, float]:
    configmap = cluster.request("GET", f"/api/v1/namespaces/{ns}/configmaps/{name}-routes")
    table = yaml.safe_load(next(iter(configmap["data"].values())))
    variants = table["routes"][0]["variants"]
    total = sum(v["weight"] for v in variants)
    return {v["name"]: 100 * v["weight"] / total for v in variants if v["weight"]}


def test_operator_converges_through_api_faults_and_acts_on_a_promote_once(faulty):
    cluster, operator = faulty
    ns, name = f"t-{uuid.uuid4().hex[:8]}", "flaky"
    cluster.create_namespace(ns)
    steps = [
        {"weight": 20, "duration": "1s"},
        {"weight": 40, "duration": HOLD},
        {"weight": 60, "duration": HOLD},
        {"weight": 80, "duration": HOLD},
    ]
    base = manifest(name, f"file:///models/{name}-1.onnx", steps=steps, checks=[])
    base["spec"]["rollout"]["progressDeadline"] = "10m"
    nxt = with_model(base, f"file:///models/{name}-2.onnx")
    stable, candidate = revision_of(base), revision_of(nxt)

    def wait(predicate, timeout: float, what: str) -> dict[str, Any]:
        return wait_status(cluster, ns, name, predicate, timeout, what, operator)

    def reasons() -> Counter[str]:
        return Counter(e["reason"] for e in cluster.events(ns, name))

    def promote_once(step: int) -> None:
        cluster.annotate(ns, name, ACTION, "promote")
        wait_until(
            lambda: ACTION not in (cluster.get(ns, name)["metadata"].get("annotations") or {}),
            timeout=60,
            message="the promote annotation handled and removed",
        )
        # passes keep running (and failing, and retrying) for a while: the step must stay put
        time.sleep(4.0)
        status = cluster.status(ns, name)
        assert status.get("currentStep") == step + 1, (step, status)

    cluster.create(ns, base)
    wait(lambda s: s.get("phase") == "Healthy" and s.get("stableRevision") == stable, 90, "first revision")
    cluster.patch(ns, name, {"spec": {"model": nxt["spec"]["model"]}})
    wait(lambda s: s.get("currentStep") == 1 and s.get("stepStartedAt"), 90, "the held step 2 running")

    promote_once(1)
    wait_until(lambda: reasons()["PromotionRequested"] >= 1, timeout=30, message="PromotionRequested event")
    assert reasons()["PromotionRequested"] == 1, reasons()
    promote_once(2)
    assert reasons()["PromotionRequested"] == 2, reasons()
    cluster.annotate(ns, name, ACTION, "promote-full")  # the last step: straight to 100 %
    status = wait(
        lambda s: s.get("phase") == "Healthy" and s.get("stableRevision") == candidate, 90, "promoted"
    )

    # the final status says what happened, and agrees with the children
    assert status.get("candidateRevision") is None, status
    assert {w["revision"]: w["desired"] for w in status["weights"] if w.get("desired")} == {candidate: 100}
    outcomes = {r["revision"]: r.get("outcome") for r in status["revisions"]}
    assert outcomes[candidate] in ("Promoted", "Serving"), outcomes
    generation = cluster.get(ns, name)["metadata"]["generation"]
    assert status["observedGeneration"] == generation, status
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "True", status["conditions"]
    wait_until(
        lambda: route_weights(cluster, ns, name) == {candidate: 100},
        timeout=30,
        message="route table at 100 %",
    )
    wait_until(lambda: reasons()["Promoted"] >= 1, timeout=30, message="Promoted event")
    counted = reasons()
    assert counted["PromotionRequested"] == 3, counted  # three promotes, each acted on once
    assert counted["Promoted"] == 1, counted

    # the faults did happen, to the operator's requests
    audit = cluster.audit()
    injected = Counter(e["fault"] for e in audit if e.get("fault"))
    injected["slow"] = sum(1 for e in audit if e.get("delayed"))
    assert sum(injected.values()) >= 5 and len(+injected) >= 2, injected
    watches = [e for e in audit if e.get("verb") == "watch" and e.get("userAgent", "").startswith("kopf")]
    assert len(watches) > 4, "no watch was cut and resumed"
    print(f"\ninjected faults: {dict(injected)}; operator watches opened: {len(watches)}")


def test_a_bad_fault_specification_is_refused_naming_the_field():
    result = subprocess.run(
        [PYTHON, "-m", "mlrollouts.cli.main", "local", "apiserver", "--faults", "conflict=0.1,throttle=lots"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result
    assert "--faults: throttle: 'lots' is not a probability" in result.stderr, result.stderr


def condition_of(status: dict[str, Any], kind: str) -> dict[str, Any]:
    return next((c for c in status.get("conditions") or [] if c["type"] == kind), {})


def test_a_forbidden_write_degrades_the_resource_with_the_reason_until_the_right_is_granted(tmp_path):
    """RBAC without the right to write the route table (a chart that did not grant a provider's
    objects): the resource says so at once, and goes on by itself once the right exists."""
    lifted_after = 40.0  # the fault lasts this long after the API server starts: then it is granted
    faults = f"forbidden=1,paths=/configmaps/[^/]*-routes$,agents=mlrollouts,for={lifted_after:.0f}s"
    cluster = FaultyCluster(tmp_path, faults)
    started = time.monotonic()
    operator, _ = start_operator(cluster, tmp_path, None)
    try:
        ns, name = f"t-{uuid.uuid4().hex[:8]}", "locked"
        cluster.create_namespace(ns)
        cluster.create(
            ns,
            manifest(
                name, f"file:///models/{name}-1.onnx", steps=[{"weight": 50, "duration": "1s"}], checks=[]
            ),
        )

        def forbidden_reasons() -> int:
            return sum(e["reason"] == "Forbidden" for e in cluster.events(ns, name))

        status = wait_status(
            cluster,
            ns,
            name,
            lambda s: condition_of(s, "Degraded").get("reason") == "Forbidden",
            lifted_after - 10,
            "the Forbidden condition",
            operator,
        )
        assert time.monotonic() - started < lifted_after, "the condition came after the fault was lifted"
        degraded, ready = condition_of(status, "Degraded"), condition_of(status, "Ready")
        assert degraded["status"] == "True" and (ready["status"], ready["reason"]) == ("False", "Forbidden")
        assert 'cannot patch resource "configmaps"' in degraded["message"], degraded
        assert f"{name}-routes" in degraded["message"], degraded
        assert "grant the right to the operator's ServiceAccount" in degraded["message"], degraded
        assert status.get("phase") != "Healthy", status
        wait_until(lambda: forbidden_reasons() >= 1, timeout=20, message="a Forbidden event")

        status = wait_status(
            cluster,
            ns,
            name,
            lambda s: s.get("phase") == "Healthy",
            lifted_after + 60,
            "Healthy once granted",
            operator,
        )
        assert condition_of(status, "Ready")["status"] == "True", status["conditions"]
        assert condition_of(status, "Degraded")["status"] == "False", status["conditions"]
        assert route_weights(cluster, ns, name) == {
            revision_of(manifest(name, f"file:///models/{name}-1.onnx")): 100
        }
        said = [e["message"][:60] for e in cluster.events(ns, name) if e["reason"] == "Forbidden"]
        assert len(said) == 1, f"one event when it starts, not one per retry: {said}"
    finally:
        operator.stop()
        cluster.stop()
