"""Prometheus down mid-canary for longer than the failure limit, then back, with the real operator.

While the metrics provider is unreachable the rollout must not move: no promotion, no weight
advance (neither in the status nor in the route table the router reads), no rollback either (an
unreadable metric is no evidence against the candidate); a condition and an event say why. When
Prometheus answers again the same operator process carries the rollout to the end.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from harness import Cluster, start_operator
from rollout_support import manifest, revision_of, verdicts, wait_status, with_model

from support import Proc
from support.exporters import serving_exporter
from support.prometheus import PrometheusServer

pytestmark = [pytest.mark.integration, pytest.mark.faults]

GOOD = {"rps": 40, "error_ratio": 0.0, "latency": 0.02}
FAILURE_LIMIT = 2
# Errors never count as failures, and under the default onInconclusive (Hold) not towards
# inconclusiveLimit either (default 3): the outage outlasts both, and the rollout holds in Progressing.
INCONCLUSIVE_LIMIT = 3
STEPS = [{"weight": 20, "duration": "4s"}, {"weight": 50, "duration": "2s"}]
ADVANCE_EVENTS = ("StepCompleted", "WeightChanged", "Promoted", "RolledBack")


class Watch:
    """Samples the status and the route table every 0.1 s, so a move between two checks is seen."""

    def __init__(self, cluster: Cluster, ns: str, name: str) -> None:
        self.cluster, self.ns, self.name = cluster, ns, name
        self.samples: list[tuple[int | None, dict[str, int], dict[str, float], str, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            with contextlib.suppress(AssertionError):
                status = self.cluster.status(self.ns, self.name)
                desired = {w["revision"]: w["desired"] for w in status.get("weights", [])}
                self.samples.append(
                    (
                        status.get("currentStep"),
                        desired,
                        route_weights(self.cluster, self.ns, self.name),
                        status.get("phase", ""),
                        status.get("stableRevision", ""),
                    )
                )

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def route_weights(cluster: Cluster, ns: str, name: str) -> dict[str, float]:
    """The weight of each variant in the route table the router reads (by variant name)."""
    configmap = cluster.request("GET", f"/api/v1/namespaces/{ns}/configmaps/{name}-routes")
    table = yaml.safe_load(configmap["data"]["routes.yaml"])
    return {v["name"]: v["weight"] for route in table["routes"] for v in route["variants"]}


def event_counts(cluster: Cluster, ns: str, name: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    for event in cluster.events(ns, name):
        counts[event["reason"]] = counts.get(event["reason"], 0) + int(event.get("count") or 1)
    return counts


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[PrometheusServer]:
    server = PrometheusServer(tmp_path / "prometheus").start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def operator(cluster: Cluster, tmp_path: Path, prometheus: PrometheusServer) -> Iterator[Proc]:
    proc, _ = start_operator(cluster, tmp_path, prometheus.url)
    try:
        yield proc
    finally:
        proc.stop()


def test_prometheus_outage_holds_the_canary_and_recovery_resumes_it(
    cluster, namespace, prometheus, operator, tmp_path
):
    name = "outage"
    base = manifest(
        name,
        f"file:///models/{name}-1.onnx",
        steps=STEPS,
        failureLimit=FAILURE_LIMIT,
        prometheus={"address": prometheus.url, "timeout": "1s"},
    )
    following = with_model(base, f"file:///models/{name}-2.onnx")
    stable, candidate = revision_of(base), revision_of(following)

    def wait(predicate, timeout: float, what: str) -> dict:
        return wait_status(cluster, namespace, name, predicate, timeout, what, operator)

    with contextlib.ExitStack() as stack:
        exporters = [
            stack.enter_context(serving_exporter(tmp_path, model=name, revision=rev, **GOOD))
            for rev in (stable, candidate)
        ]
        prometheus.set_targets([([e.target for e in exporters], {})])
        for rev in (stable, candidate):
            prometheus.wait_for_series(f'mlserving_requests_total{{model="{name}",revision="{rev}"}}')
        cluster.create(namespace, base)
        wait(lambda s: s.get("phase") == "Healthy", 30, "first revision Healthy")
        cluster.patch(namespace, name, {"spec": {"model": following["spec"]["model"]}})
        # the first run passes 2 s into the 4 s step: the step cannot end before the next run passes
        wait(lambda s: "Pass" in verdicts(s), 30, "a first passing analysis")
        prometheus.stop()
        # a run that queried Prometheus just before it stopped may still land (and end the step):
        # the outage is judged from its first Error run on
        before = wait(lambda s: "Error" in verdicts(s), 30, "a first analysis error")
        events_before = event_counts(cluster, namespace, name)
        watch = Watch(cluster, namespace, name)
        try:
            during = wait(
                lambda s: verdicts(s).count("Error") >= max(FAILURE_LIMIT, INCONCLUSIVE_LIMIT) + 2,
                30,
                "analysis errors past the limit",
            )
        finally:
            watch.stop()
        assert_held(watch, before, stable, candidate)
        assert_says_why(cluster, namespace, name, during, prometheus.url)
        moved = {
            r: n - events_before.get(r, 0)
            for r, n in event_counts(cluster, namespace, name).items()
            if r in ADVANCE_EVENTS
        }
        assert not any(moved.values()), f"events of a rollout that moved during the outage: {moved}"

        prometheus.start()  # same port and data: the operator finds it again by itself
        final = wait(
            lambda s: s.get("phase") == "Healthy" and s.get("stableRevision") == candidate,
            60,
            "the canary completed after the outage",
        )
    assert operator.alive(), "the operator was not restarted"
    runs = final["analysis"]["runs"]
    assert {r["step"] for r in runs if r["verdict"] == "Pass"} >= {0, 1}, runs
    progressing = next(c for c in final["conditions"] if c["type"] == "Progressing")
    assert progressing["reason"] == "RolloutComplete", progressing
    assert route_weights(cluster, namespace, name) == {candidate: 100}


def assert_held(watch: Watch, before: dict, stable: str, candidate: str) -> None:
    """Every sample taken during the outage shows the rollout where the outage found it."""
    step = before["currentStep"]
    weight = {w["revision"]: w["desired"] for w in before["weights"]}[candidate]
    assert len(watch.samples) > 20, "the status was sampled throughout the outage"
    for current_step, desired, routed, phase, stable_revision in watch.samples:
        assert (current_step, phase, stable_revision) == (step, "Progressing", stable)
        assert desired[candidate] == weight and desired[stable] == 100 - weight
        assert routed.get(candidate) == weight and routed.get(stable) == 100 - weight, routed


def assert_says_why(cluster: Cluster, ns: str, name: str, status: dict, address: str) -> None:
    progressing = next(c for c in status["conditions"] if c["type"] == "Progressing")
    assert progressing["status"] == "True" and progressing["reason"] == "AnalysisError", progressing
    assert f"cannot reach Prometheus at {address}" in progressing["message"], progressing
    errors = [e for e in cluster.events(ns, name) if e["reason"] == "AnalysisError"]
    assert errors and all(e["type"] == "Warning" for e in errors)
    assert any(f"cannot reach Prometheus at {address}" in e["message"] for e in errors), errors
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "True", "the stable revision keeps serving"
