"""Rollouts end to end over HTTP: the real operator process (``mlrollouts operator run``), the API
emulator, and a real Prometheus scraping exporter processes that play the stable and candidate
revisions with controlled error rates and latencies. One cluster and one operator serve the module;
each test has its own namespace and model."""

from __future__ import annotations

import base64
import contextlib
import time
import urllib.request
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
from harness import Cluster, start_operator
from rollout_support import manifest, revision_of, verdicts, wait_status, with_model

from support import Proc, wait_until
from support.exporters import serving_exporter
from support.prometheus import PrometheusServer

pytestmark = [pytest.mark.integration, pytest.mark.slow]

GOOD = {"rps": 40, "error_ratio": 0.0, "latency": 0.02}
INTERVAL, FAILURE_LIMIT = 2, 2


class Env:
    def __init__(self, workdir: Path, prom: PrometheusServer) -> None:
        self.workdir, self.prom = workdir, prom
        self.cluster = Cluster(workdir)
        self.proc: Proc | None = None
        self.start_operator()

    def start_operator(self) -> None:
        self.proc, self.metrics_port = start_operator(self.cluster, self.workdir, self.prom.url)

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as resp:
            return resp.read().decode()

    def output(self) -> str:
        return self.proc.output() if self.proc else ""

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()
        self.cluster.stop()


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("rollouts")


@pytest.fixture(scope="module")
def prom(workdir: Path) -> Iterator[PrometheusServer]:
    server = PrometheusServer(workdir / "prometheus").start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def env(workdir: Path, prom: PrometheusServer) -> Iterator[Env]:
    e = Env(workdir, prom)
    try:
        yield e
    finally:
        e.stop()


@pytest.fixture
def exporters(tmp_path):
    """``start(prom, model, {revision: settings})``: exporter processes scraped by ``prom``."""
    stack = contextlib.ExitStack()

    def start(prom: PrometheusServer, model: str, revisions: dict[str, dict]) -> dict:
        started = {
            rev: stack.enter_context(serving_exporter(tmp_path, model=model, revision=rev, **settings))
            for rev, settings in revisions.items()
        }
        prom.set_targets([([e.target for e in started.values()], {})])
        for rev in revisions:
            prom.wait_for_series(f'mlserving_requests_total{{model="{model}",revision="{rev}"}}', timeout=60)
        return started

    with stack:
        yield start


class Case:
    """One ModelDeployment in its own namespace: a stable manifest and the next one."""

    def __init__(self, env: Env, name: str, **kw) -> None:
        self.env, self.cluster, self.name = env, env.cluster, name
        self.ns = f"t-{uuid.uuid4().hex[:8]}"
        self.cluster.create_namespace(self.ns)
        self.base = manifest(name, f"file:///models/{name}-1.onnx", **kw)
        self.next = with_model(self.base, f"file:///models/{name}-2.onnx")
        self.stable, self.candidate = revision_of(self.base), revision_of(self.next)

    def wait(self, predicate, timeout: float, what: str) -> dict:
        return wait_status(self.cluster, self.ns, self.name, predicate, timeout, what, self.env)

    def status(self) -> dict:
        return self.cluster.status(self.ns, self.name)

    def deploy_stable(self) -> dict:
        self.cluster.create(self.ns, self.base)
        return self.wait(lambda s: s.get("phase") == "Healthy", 30, "first revision Healthy")

    def roll_out(self) -> None:
        self.cluster.patch(self.ns, self.name, {"spec": {"model": self.next["spec"]["model"]}})

    def deployment(self, revision: str) -> dict:
        return self.cluster.request(
            "GET", f"/apis/apps/v1/namespaces/{self.ns}/deployments/{self.name}-{revision}"
        )

    def reasons(self) -> list[str]:
        return [e["reason"] for e in self.cluster.events(self.ns, self.name)]


def test_immediate_strategy_creates_owned_children_and_switches(env):
    case = Case(env, "plain", steps=[])
    case.base["spec"]["rollout"] = {"strategy": "Immediate", "scaleDownDelay": "1s"}
    case.next = with_model(case.base, "file:///models/plain-2.onnx")
    created = case.cluster.create(case.ns, case.base)
    status = case.wait(lambda s: s.get("phase") == "Healthy", 30, "Healthy")
    assert status["stableRevision"] == case.stable
    dep = case.deployment(case.stable)
    assert dep["metadata"]["ownerReferences"][0]["uid"] == created["metadata"]["uid"]
    assert dep["metadata"]["labels"]["mlrollouts.io/revision"] == case.stable
    names = {
        d["metadata"]["name"] for d in case.cluster.objects(f"/apis/apps/v1/namespaces/{case.ns}/deployments")
    }
    assert names == {f"plain-{case.stable}", "plain-router"}
    cms = {c["metadata"]["name"] for c in case.cluster.objects(f"/api/v1/namespaces/{case.ns}/configmaps")}
    assert "plain-routes" in cms
    # the router replicas share one signing key, kept in an owned Secret
    key_path = f"/api/v1/namespaces/{case.ns}/secrets/plain-router-key"
    key = case.cluster.request("GET", key_path)
    assert key["metadata"]["ownerReferences"][0]["uid"] == created["metadata"]["uid"]
    assert len(base64.b64decode(key["data"]["signing-key"])) >= 32
    conditions = {c["type"]: c for c in status["conditions"]}
    assert conditions["Ready"]["status"] == "True" and conditions["Ready"]["observedGeneration"] == 1
    case.roll_out()
    status = case.wait(
        lambda s: s.get("stableRevision") == case.candidate and s.get("phase") == "Healthy", 30, "switched"
    )
    assert status["weightsSummary"] == f"{case.candidate}:100"
    assert case.cluster.request("GET", key_path)["data"] == key["data"], "the signing key was rotated"
    wait_until(
        lambda: case.deployment(case.stable)["spec"]["replicas"] == 0, timeout=20, message="old scaled down"
    )
    wait_until(lambda: {"RevisionCreated", "Available", "Promoted"} <= set(case.reasons()), timeout=10)
    text = env.metrics()
    assert f'mlrollouts_phase{{name="plain",namespace="{case.ns}",phase="Healthy"}} 1.0' in text
    assert (
        f'mlrollouts_weight_percent{{name="plain",namespace="{case.ns}",revision="{case.candidate}"}} 100.0'
        in text
    )
    assert "mlrollouts_reconcile_duration_seconds_count" in text
    # switching the traffic provider removes the old provider's objects
    case.cluster.patch(case.ns, case.name, {"spec": {"traffic": {"provider": "Service"}}})
    deployments = f"/apis/apps/v1/namespaces/{case.ns}/deployments"
    wait_until(
        lambda: "plain-router" not in {d["metadata"]["name"] for d in case.cluster.objects(deployments)},
        timeout=20,
        message="router removed",
    )
    # the entry Service was switched to the serving pods before the router went away
    svc = case.cluster.request("GET", f"/api/v1/namespaces/{case.ns}/services/plain")
    assert "mlrollouts.io/revision" not in svc["spec"]["selector"]
    assert svc["spec"]["selector"]["app.kubernetes.io/component"] == "serving"
    cms = {c["metadata"]["name"] for c in case.cluster.objects(f"/api/v1/namespaces/{case.ns}/configmaps")}
    assert "plain-routes" not in cms


def test_good_candidate_is_promoted_through_every_step(env, exporters):
    case = Case(env, "good")
    exporters(env.prom, "good", {case.stable: GOOD, case.candidate: GOOD})
    case.deploy_stable()
    case.roll_out()
    seen = set()

    def promoted(s):
        seen.update(w["desired"] for w in s.get("weights", []) if w["revision"] == case.candidate)
        return s.get("phase") == "Healthy" and s.get("stableRevision") == case.candidate

    status = case.wait(promoted, 60, "candidate promoted")
    assert {20, 50} <= seen
    runs = status["analysis"]["runs"]
    assert runs and all(r["verdict"] == "Pass" for r in runs), runs
    assert {r["step"] for r in runs} == {0, 1}
    assert all(r["samples"] >= 10 for r in runs)
    reasons = wait_until(lambda: "Promoted" in (r := case.reasons()) and r, timeout=10, message="events")
    assert reasons.count("StepCompleted") == 2 and "RolledBack" not in reasons
    assert status["weightsSummary"] == f"{case.candidate}:100"


@pytest.mark.parametrize(
    ("name", "candidate_settings", "failing_check"),
    [
        ("errors", {**GOOD, "error_ratio": 0.3}, "errors"),
        ("tail", {**GOOD, "tail_ratio": 0.05, "tail_latency": 2.0}, "p99"),
    ],
)
def test_bad_candidate_is_rolled_back(env, exporters, name, candidate_settings, failing_check):
    case = Case(env, name)
    exporters(env.prom, name, {case.stable: GOOD, case.candidate: candidate_settings})
    case.deploy_stable()
    case.roll_out()
    case.wait(lambda s: s.get("stepStartedAt") and s.get("candidateRevision") == case.candidate, 30, "step 1")
    t0 = time.monotonic()
    limit = INTERVAL * FAILURE_LIMIT + 5
    status = case.wait(lambda s: s.get("phase") == "Degraded", limit + 3, "rolled back")
    assert time.monotonic() - t0 <= limit
    assert status["failedRevision"] == case.candidate and status["stableRevision"] == case.stable
    desired = {w["revision"]: w["desired"] for w in status["weights"]}
    assert desired[case.stable] == 100 and desired.get(case.candidate, 0) == 0
    failed = [r for r in status["analysis"]["runs"] if r["verdict"] == "Fail"]
    assert len(failed) == FAILURE_LIMIT and {r["check"] for r in failed} == {failing_check}
    degraded = next(c for c in status["conditions"] if c["type"] == "Degraded")
    assert degraded["status"] == "True" and degraded["reason"] == "AnalysisFailed"
    wait_until(
        lambda: case.deployment(case.candidate)["spec"]["replicas"] == 0, timeout=10, message="scaled down"
    )
    assert case.status()["phase"] == "Degraded"  # stays until the spec changes
    wait_until(lambda: "RolledBack" in case.reasons(), timeout=10, message="RolledBack event")


def test_candidate_without_traffic_is_inconclusive_and_holds(env, exporters):
    case = Case(env, "idle", inconclusiveLimit=2, onInconclusive="Hold")
    exporters(env.prom, "idle", {case.stable: GOOD, case.candidate: {"rps": 0}})
    case.deploy_stable()
    case.roll_out()
    status = case.wait(lambda s: s.get("phase") == "Paused", 30, "held")
    assert status["currentStep"] == 0 and status["stableRevision"] == case.stable
    assert verdicts(status) and set(verdicts(status)) == {"Inconclusive"}
    assert all(r.get("samples", 0) < 10 for r in status["analysis"]["runs"])
    progressing = next(c for c in status["conditions"] if c["type"] == "Progressing")
    assert progressing["status"] == "Unknown" and progressing["reason"] == "InconclusiveAnalysis"
    desired = {w["revision"]: w["desired"] for w in status["weights"]}
    assert desired[case.candidate] == 20  # held at its step: neither forward nor back
    # a manual abort through the annotation: rolled back, annotation removed by the operator
    case.cluster.annotate(case.ns, case.name, "mlrollouts.io/action", "abort")
    status = case.wait(lambda s: s.get("phase") == "Degraded", 15, "aborted")
    assert status["message"].startswith("Aborted") and status["failedRevision"] == case.candidate
    wait_until(
        lambda: (
            "mlrollouts.io/action"
            not in case.cluster.get(case.ns, case.name)["metadata"].get("annotations", {})
        ),
        timeout=10,
        message="action annotation removed",
    )


def test_prometheus_lost_mid_rollout_never_promotes(env, exporters, tmp_path):
    own = PrometheusServer(tmp_path / "own-prometheus").start()
    try:
        case = Case(env, "blind", steps=[{"weight": 20, "duration": "6s"}], inconclusiveLimit=50)
        case.base["spec"]["rollout"]["analysis"]["prometheus"] = {"address": own.url, "timeout": "1s"}
        case.next = with_model(case.base, "file:///models/blind-2.onnx")
        exporters(own, "blind", {case.stable: GOOD, case.candidate: GOOD})
        case.deploy_stable()
        case.roll_out()
        case.wait(lambda s: "Pass" in verdicts(s), 30, "a first passing analysis")
        own.stop()
        # passes at +2 s and +4 s would end the 6 s step at +6 s; the errors keep it open past its end
        status = case.wait(lambda s: verdicts(s).count("Error") >= 4, 30, "analysis errors")
        started = datetime.fromisoformat(status["stepStartedAt"].replace("Z", "+00:00"))
        last_run = datetime.fromisoformat(status["analysis"]["lastRunAt"].replace("Z", "+00:00"))
        assert (last_run - started).total_seconds() > 6
        assert status["phase"] == "Progressing" and status["stableRevision"] == case.stable
        assert status["currentStep"] == 0
        errors = [r for r in status["analysis"]["runs"] if r["verdict"] == "Error"]
        assert all(r.get("message") for r in errors)
    finally:
        own.stop()


def test_operator_killed_mid_rollout_resumes_at_the_same_step(env, exporters):
    case = Case(
        env,
        "crash",
        steps=[
            {"weight": 10, "duration": "2s"},
            {"weight": 30, "duration": "4s"},
            {"weight": 60, "duration": "2s"},
        ],
    )
    exporters(env.prom, "crash", {case.stable: GOOD, case.candidate: GOOD})
    case.deploy_stable()
    case.roll_out()
    before = case.wait(lambda s: s.get("currentStep") == 1 and s.get("stepStartedAt"), 40, "step 2 running")
    env.proc.kill()
    env.proc.stop()
    runs_before = before["analysis"]["runs"]
    env.start_operator()
    after = case.wait(
        lambda s: s.get("analysis", {}).get("runs") != runs_before, 30, "analysis after restart"
    )
    assert after["currentStep"] in (1, 2)
    if after["currentStep"] == 1:
        assert after["stepStartedAt"] == before["stepStartedAt"]  # the step was not restarted
    status = case.wait(
        lambda s: s.get("phase") == "Healthy" and s.get("stableRevision") == case.candidate, 60, "promoted"
    )
    runs = status["analysis"]["runs"]
    keys = [(r["time"], r["check"]) for r in runs]
    assert len(keys) == len(set(keys))  # each check once per run: nothing repeated
    assert {r["step"] for r in runs} == {0, 1, 2}  # nothing skipped
    assert all(r["verdict"] == "Pass" for r in runs)
    wait_until(
        lambda: case.reasons().count("StepCompleted") == 3, timeout=10, message="3 StepCompleted events"
    )
