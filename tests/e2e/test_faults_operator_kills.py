"""The operator SIGKILLed again and again on the playground, over a canary and over a rollback.

Everything is real: the playground's supervisor, API emulator, process kubelet, model servers, router
and Prometheus. Watches on the API server (the route table ConfigMap, the ModelDeployment, the
Deployments, the Endpoints) record every version of what the operator writes, and they trigger the
kills: right after a route-table write (at step changes; the API emulator holds status writes back
0.2 s so that such a kill lands before a status write that would follow it), right after a status
write, right after a Deployment spec write, and (by the clock) when an analysis run is due, i.e.
while the operator queries Prometheus. The supervisor restarts the operator each time; the next kill
is armed once the new process has written again. The guarantees checked afterwards, from what the
watches saw:

- the canary ends promoted and the broken revision ends rolled back;
- no step skipped, and no check skipped: every step of the promotion has at least one analysis run
  of that step and revision in which every check passed (the status records, which carry the
  revision and step they judged, collected from every status version);
- the candidate's weight on the route table never goes backwards during the promotion, and a
  rolled-back revision never gets traffic again;
- no moment without a ready serving revision behind the route table (longest gap measured from
  the Endpoints), and no request of the client without an answer.

The kill counts come from the environment: ``MLROLLOUTS_FAULT_KILLS_CANARY`` (default 4) and
``MLROLLOUTS_FAULT_KILLS_ROLLBACK`` (default 2); ``make test-faults-long`` runs 20 and 10. The
invariant counts are printed and written to ``<tmp>/fault-counts.json``.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx
import pytest
import yaml

from mlrollouts.local.demo_canary import CanaryScenario, train_demo_models
from mlrollouts.local.demo_scenario import DemoContext
from mlrollouts.local.playground import Playground
from support import require_binary

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.faults]

KILLS_CANARY = int(os.environ.get("MLROLLOUTS_FAULT_KILLS_CANARY", "4"))
KILLS_ROLLBACK = int(os.environ.get("MLROLLOUTS_FAULT_KILLS_ROLLBACK", "2"))
INTERVAL = 2.0
CANARY_WEIGHTS = (10, 30, 60)
HOLD_STATUS_WRITES = "slow=1:0.2s,paths=/modeldeployments/[^/]+/status$"
"""The API emulator holds every status write back 0.2 s (a client that dies meanwhile cancels it),
so that a kill right after a route-table write lands before the status write that may follow."""
SECONDS_PER_KILL = 8.0
"""About how long one kill costs: the trigger, 1 s of back-off, the operator's start and first write."""

Obj = dict[str, Any]


def step_seconds(canary_kills: int) -> int:
    return max(8, round(canary_kills * SECONDS_PER_KILL / len(CANARY_WEIGHTS)))


def parse_time(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def fault_manifest(base: Obj, canary_kills: int, rollback_kills: int) -> Obj:
    """The demo's canary, sized so that the planned kills fit inside the rollouts they interrupt."""
    manifest = json.loads(json.dumps(base))
    rollout = manifest["spec"]["rollout"]
    seconds = step_seconds(canary_kills)
    rollout["steps"] = [{"weight": w, "duration": f"{seconds}s"} for w in CANARY_WEIGHTS]
    rollout["analysis"].update(
        interval=f"{INTERVAL:.0f}s",
        failureLimit=2 * rollback_kills + 2,
        failureMode="Consecutive",
        inconclusiveLimit=50,
        minSamples=3,
    )
    for check in rollout["analysis"]["checks"]:
        check["window"] = "6s"
    rollout["progressDeadline"] = "5m"
    rollout["scaleDownDelay"] = "2s"
    return manifest


# ------------------------------------------------------------------------------------------ watches
class ApiWatch(threading.Thread):
    """A watch on one collection of the API server; ``on_event(type, object)`` for every event,
    resumed from the last resource version when the connection ends."""

    def __init__(self, api_url: str, path: str, on_event: Callable[[str, Obj], None]) -> None:
        super().__init__(name=f"watch {path}", daemon=True)
        self.api_url, self.path, self.on_event = api_url, path, on_event
        self.stopping = threading.Event()
        self.synced = threading.Event()
        self.errors: list[str] = []

    def run(self) -> None:
        with httpx.Client(base_url=self.api_url, timeout=httpx.Timeout(10.0, read=None)) as client:
            version = ""
            while not self.stopping.is_set():
                try:
                    if not version:
                        listing = client.get(self.path).json()
                        for item in listing.get("items") or []:
                            self.on_event("ADDED", item)
                        version = listing["metadata"]["resourceVersion"]
                        self.synced.set()
                    version = self._follow(client, version)
                except Exception as exc:  # a cut connection, or a defect of a handler: shown on failure
                    self.errors.append(repr(exc))
                self.stopping.wait(0.05)

    def _follow(self, client: httpx.Client, version: str) -> str:
        params = {"watch": "true", "resourceVersion": version, "allowWatchBookmarks": "true"}
        with client.stream("GET", self.path, params=params) as response:
            for line in response.iter_lines():
                if self.stopping.is_set():
                    break
                if not line:
                    continue
                event = json.loads(line)
                if event["type"] == "ERROR":
                    return ""  # too old: list again
                version = event["object"]["metadata"]["resourceVersion"]
                if event["type"] != "BOOKMARK":
                    self.on_event(event["type"], event["object"])
        return version


def route_weights(configmap: Obj) -> dict[str, float]:
    """Percent of traffic per upstream Service named in a route table ConfigMap."""
    text = next(iter((configmap.get("data") or {}).values()), "") or ""
    table = yaml.safe_load(text) or {}
    weights: dict[str, float] = {}
    for route in table.get("routes") or []:
        variants = route.get("variants") or []
        total = sum(float(v.get("weight") or 0) for v in variants) or 1.0
        for variant in variants:
            for upstream in variant.get("upstreams") or []:
                service = (urlparse(upstream).hostname or "").split(".")[0]
                weights[service] = (
                    weights.get(service, 0.0) + 100.0 * float(variant.get("weight") or 0) / total
                )
    return weights


@dataclass
class Record:
    """What the watches saw, in order (monotonic seconds)."""

    routes: list[tuple[float, dict[str, float]]] = field(default_factory=list)
    statuses: list[tuple[float, Obj]] = field(default_factory=list)
    runs: dict[tuple[str, str], Obj] = field(default_factory=dict)
    endpoints: dict[str, int] = field(default_factory=dict)
    generations: dict[str, int] = field(default_factory=dict)
    replicas: dict[str, int] = field(default_factory=dict)
    last_write: float = 0.0
    """When the operator last wrote something a watch saw."""
    unserved_since: float | None = None
    longest_unserved: float = 0.0


class Observer:
    """Watches the ModelDeployment ``name`` and its children; calls ``on_write(kind)`` right after
    each write of the operator a watch delivers (kind: route, status, deployment)."""

    def __init__(self, api_url: str, namespace: str, name: str) -> None:
        self.name = name
        self.record = Record()
        self.lock = threading.Lock()
        self.on_write: Callable[[str], None] = lambda kind: None
        paths = {
            f"/api/v1/namespaces/{namespace}/configmaps": self._configmap,
            f"/apis/mlrollouts.io/v1alpha1/namespaces/{namespace}/modeldeployments": self._modeldeployment,
            f"/apis/apps/v1/namespaces/{namespace}/deployments": self._deployment,
            f"/api/v1/namespaces/{namespace}/endpoints": self._endpoints,
        }
        self.watches = [ApiWatch(api_url, path, handler) for path, handler in paths.items()]

    def start(self) -> Observer:
        for watch in self.watches:
            watch.start()
        for watch in self.watches:
            assert watch.synced.wait(30), f"no listing from {watch.path}"
        return self

    def stop(self) -> None:
        for watch in self.watches:
            watch.stopping.set()

    def status(self) -> Obj:
        with self.lock:
            return dict(self.record.statuses[-1][1]) if self.record.statuses else {}

    def _wrote(self, kind: str) -> None:
        self.record.last_write = time.monotonic()
        self.on_write(kind)

    def _configmap(self, kind: str, obj: Obj) -> None:
        if obj["metadata"]["name"] != f"{self.name}-routes" or kind == "DELETED":
            return
        with self.lock:
            self.record.routes.append((time.monotonic(), route_weights(obj)))
            self._check_served()
        self._wrote("route")

    def _modeldeployment(self, kind: str, obj: Obj) -> None:
        if obj["metadata"]["name"] != self.name:
            return
        status = obj.get("status") or {}
        with self.lock:
            previous = self.record.statuses[-1][1] if self.record.statuses else None
            if status == previous:
                return
            self.record.statuses.append((time.monotonic(), status))
            for run in (status.get("analysis") or {}).get("runs") or []:
                self.record.runs[(run["time"], run["check"])] = run
        if previous is not None:
            self._wrote("status")

    def _deployment(self, kind: str, obj: Obj) -> None:
        meta = obj["metadata"]
        with self.lock:
            before = self.record.generations.get(meta["name"])
            self.record.generations[meta["name"]] = meta.get("generation", 0)
            self.record.replicas[meta["name"]] = int((obj.get("spec") or {}).get("replicas") or 0)
        if before != meta.get("generation"):  # a spec write (the kubelet only writes status)
            self._wrote("deployment")

    def _endpoints(self, kind: str, obj: Obj) -> None:
        ready = 0
        if kind != "DELETED":
            ready = sum(len(s.get("addresses") or []) for s in obj.get("subsets") or [])
        with self.lock:
            self.record.endpoints[obj["metadata"]["name"]] = ready
            self._check_served()

    def _check_served(self) -> None:
        """Track the longest time no Service the route table sends traffic to had a ready endpoint."""
        record = self.record
        if not record.routes:
            return
        weights = record.routes[-1][1]
        served = any(record.endpoints.get(service, 0) > 0 for service, w in weights.items() if w > 0)
        now = time.monotonic()
        if served and record.unserved_since is not None:
            record.longest_unserved = max(record.longest_unserved, now - record.unserved_since)
            record.unserved_since = None
        elif not served and record.unserved_since is None:
            record.unserved_since = now


# -------------------------------------------------------------------------------------------- kills
@dataclass
class Kill:
    at: float
    moment: str
    step: int | None
    candidate: str | None


class Killer:
    """SIGKILLs the playground's operator at the moments of a plan, one at a time."""

    def __init__(self, demo: CanaryScenario, observer: Observer) -> None:
        self.demo, self.observer = demo, observer
        self.operator = demo.playground.child("operator")
        self.kills: list[Kill] = []
        self.armed: frozenset[str] = frozenset()
        """The moments at which the next kill happens, whichever comes first."""
        self.killed_pid = 0
        self.lock = threading.Lock()
        observer.on_write = self._on_write

    def _on_write(self, kind: str) -> None:
        if kind in self.armed:
            self._kill(kind)

    def _kill(self, moment: str) -> None:
        with self.lock:
            if moment not in self.armed or not self.operator.alive():
                return
            popen = self.operator.popen
            assert popen is not None
            with contextlib.suppress(ProcessLookupError):
                popen.send_signal(signal.SIGKILL)
            self.killed_pid = popen.pid
            self.armed = frozenset()
            status = self.observer.status()
            self.kills.append(
                Kill(time.monotonic(), moment, status.get("currentStep"), status.get("candidateRevision"))
            )

    def __str__(self) -> str:
        record = self.observer.record
        return (
            f"kills {[(round(k.at, 1), k.moment, k.step) for k in self.kills]}, armed {sorted(self.armed)}, "
            f"operator alive {self.operator.alive()} since {self.operator.started_at:.1f}, "
            f"last write seen {record.last_write:.1f}, watch errors {[w.errors[-3:] for w in self.observer.watches]}"
        )

    def _ready_to_arm(self) -> bool:
        """The restarted operator is up and has written since: it has done some work to interrupt."""
        popen = self.operator.popen
        return (
            popen is not None
            and popen.pid != self.killed_pid
            and self.operator.alive()
            and self.observer.record.last_write > self.operator.started_at
        )

    def _analysis_due(self) -> bool:
        status = self.observer.status()
        last = (status.get("analysis") or {}).get("lastRunAt")
        if not status.get("candidateRevision") or not last:
            return False
        due = parse_time(last) + INTERVAL
        return time.time() >= due + 0.05

    def run(self, plan: Plan, kills: int, done: Callable[[Obj], bool], timeout: float):
        """Kill ``kills`` times, each at the first of the moments ``plan(status)`` names, until ``done``."""
        first = len(self.kills)
        wanted = first + kills
        deadline = time.monotonic() + timeout
        ended = 0.0
        next_report = time.monotonic() + 10
        status: Obj = {}
        while time.monotonic() < deadline:
            self.demo.context.supervise()
            status = self.observer.status()
            if done(status) and len(self.kills) >= wanted:
                self.armed = frozenset()
                return status
            if done(status):
                ended = ended or time.monotonic()
                if time.monotonic() - ended > 15:
                    raise AssertionError(
                        f"the rollout ended after {len(self.kills)} of {wanted} kills: {self}"
                    )
            # a route-table kill waits for its write: the status of a step change may come first
            if len(self.kills) < wanted and self._ready_to_arm() and self.armed != {"route"}:
                self.armed = plan(status, self.kills[first:])
            if "analysis" in self.armed and self._analysis_due():
                self._kill("analysis")
            if time.monotonic() >= next_report:  # progress for the long runs
                print(f"[faults] step {status.get('currentStep')}: {self}", flush=True)
                next_report = time.monotonic() + 10
            time.sleep(0.05)
        raise AssertionError(f"not done after {timeout:.0f}s ({self}); status: {json.dumps(status)[:2000]}")


Plan = Callable[[Obj, list[Kill]], frozenset[str]]
"""The moments of the next kill, from the status and the kills done so far in the rollout."""


def filler(kills: list[Kill]) -> str:
    """Between route-table writes: a status write or a due analysis, whichever was chosen less."""
    return min(("status", "analysis"), key=lambda moment: sum(k.moment == moment for k in kills))


def canary_plan(step_seconds: float) -> Plan:
    """Before the rollout shows in the status, the new revision's Deployment; once promoted, the
    old one's scale-down. While steps remain: the route-table write of the next step change (as the
    first kill of a running step, and whenever a step is about to end), else a status write or a
    due analysis."""

    def plan(status: Obj, kills: list[Kill]) -> frozenset[str]:
        if status.get("candidateRevision"):
            started = status.get("stepStartedAt")
            ends = parse_time(started) + step_seconds if started else None
            left = ends - time.time() if ends is not None else None
            # the last chance in this step to wait for its route-table write, or a kill about to
            # miss it: a route kill, the first time or when the step is about to end
            first_route = not any(k.moment == "route" for k in kills)
            if left is not None and (left <= 2.5 or (first_route and left <= SECONDS_PER_KILL + 2)):
                return frozenset({"route"})
            return frozenset({filler(kills)})
        return frozenset({"deployment"})

    return plan


def rollback_plan(kills: int) -> Plan:
    """The new revision's Deployment first; then status writes and due analyses while its checks
    fail; last, the rollback's own route-table write."""

    def plan(status: Obj, done: list[Kill]) -> frozenset[str]:
        if not done:
            return frozenset({"deployment"})
        if len(done) >= kills - 1:
            return frozenset({"route"})
        return frozenset({filler(done)})

    return plan


# ------------------------------------------------------------------------------------------ checks
def candidate_weights(record: Record, service: str, since: float, until: float) -> list[float]:
    return [w.get(service, 0.0) for t, w in record.routes if since <= t <= until]


def backward_moves(weights: list[float]) -> int:
    return sum(1 for before, after in itertools.pairwise(weights) if after < before)


def steps_seen(record: Record, revision: str) -> list[int]:
    steps: list[int] = []
    for _, status in record.statuses:
        step = status.get("currentStep")
        if (
            status.get("candidateRevision") == revision
            and step is not None
            and (not steps or steps[-1] != step)
        ):
            steps.append(step)
    return steps


def passing_runs(record: Record, revision: str, step: int, checks: set[str]) -> int:
    """Analysis runs of ``revision`` at ``step`` in which every check passed."""
    by_time: dict[str, dict[str, str]] = {}
    for run in record.runs.values():
        if run.get("revision") == revision and run.get("step") == step:
            by_time.setdefault(run["time"], {})[run["check"]] = run["verdict"]
    return sum(
        1 for verdicts in by_time.values() if set(verdicts) == checks and set(verdicts.values()) == {"Pass"}
    )


# -------------------------------------------------------------------------------------------- test
@pytest.fixture
def demo(tmp_path, monkeypatch):
    require_binary("prometheus")
    monkeypatch.setenv("MLROLLOUTS_APISERVER_FAULTS", HOLD_STATUS_WRITES)
    models = train_demo_models(tmp_path / "models")
    # a child that ran 2 s starts again after 1 s, so twenty kills cost twenty seconds of back-off
    playground = Playground(tmp_path / "state", backoff_reset=2.0).start()
    scenario = CanaryScenario(DemoContext(playground), models)
    scenario.manifest = fault_manifest(scenario.manifest, KILLS_CANARY, KILLS_ROLLBACK)
    try:
        yield scenario
    finally:
        scenario.traffic.stop()
        playground.stop()


def test_operator_sigkills_over_a_canary_and_a_rollback(demo, tmp_path):
    name = demo.name
    v1 = demo.bring_up_v1()
    observer = Observer(demo.playground.api_url, demo.namespace, name).start()
    killer = Killer(demo, observer)
    checks = {c["name"] for c in demo.manifest["spec"]["rollout"]["analysis"]["checks"]}
    started = time.monotonic()
    try:
        # ---- the canary: v2 promoted through every step, the old revision scaled down
        canary_from = time.monotonic()
        demo.deploy(demo.models.v2, "2")
        old = f"{name}-{v1}"
        status = killer.run(
            canary_plan(step_seconds(KILLS_CANARY)),
            KILLS_CANARY,
            lambda s: (
                s.get("phase") == "Healthy"
                and s.get("stableRevision") not in (None, v1)
                and observer.record.replicas.get(old) == 0
            ),
            timeout=120 + KILLS_CANARY * 15,
        )
        canary_until = time.monotonic()
        v2 = status["stableRevision"]
        # ---- the rollback: the broken v3 rolled back by analysis
        rollback_from = time.monotonic()
        demo.deploy(demo.models.v3, "3")
        status = killer.run(
            rollback_plan(KILLS_ROLLBACK),
            KILLS_ROLLBACK,
            lambda s: s.get("phase") == "Degraded" and s.get("failedRevision"),
            timeout=120 + KILLS_ROLLBACK * 15,
        )
        v3 = status["failedRevision"]
        time.sleep(2.0)  # the route table and client after the rollback
    finally:
        observer.stop()
    record = observer.record
    with observer.lock:
        if record.unserved_since is not None:
            record.longest_unserved = max(record.longest_unserved, time.monotonic() - record.unserved_since)

    steps = len(CANARY_WEIGHTS)
    canary_steps = steps_seen(record, v2)
    weights = candidate_weights(record, f"{name}-{v2}", canary_from, canary_until)
    after_rollback = [
        w.get(f"{name}-{v3}", 0.0)
        for t, w in record.routes
        if t >= rollback_from and t > next(t for t, s in record.statuses if s.get("failedRevision") == v3)
    ]
    unchecked = [s for s in range(len(CANARY_WEIGHTS)) if passing_runs(record, v2, s, checks) < 1]
    client_errors = demo.traffic.errors + sum(
        n for (variant, code), n in demo.traffic.snapshot().items() if code != 200 and variant != v3
    )
    counts = {
        "kills": len(killer.kills),
        "kill_moments": {
            m: sum(1 for k in killer.kills if k.moment == m) for m in {k.moment for k in killer.kills}
        },
        "operator_restarts": killer.operator.restarts,
        "steps": canary_steps,
        "steps_skipped": len(set(range(steps)) - set(canary_steps)),
        "checks_skipped": len(unchecked),
        "passing_runs_per_step": [passing_runs(record, v2, s, checks) for s in range(len(CANARY_WEIGHTS))],
        "canary_weights": weights,
        "backward_moves": backward_moves(weights),
        "rolled_back_weight_after_rollback": max(after_rollback, default=0.0),
        "longest_gap_without_ready_revision_s": round(record.longest_unserved, 3),
        "client_errors": client_errors,
        "client_answers_200": sum(n for (_, code), n in demo.traffic.snapshot().items() if code == 200),
        "seconds": round(time.monotonic() - started, 1),
    }
    print("\nfault run:", json.dumps(counts), flush=True)
    Path(tmp_path / "fault-counts.json").write_text(json.dumps(counts, indent=2))

    assert len(killer.kills) == KILLS_CANARY + KILLS_ROLLBACK, killer.kills
    assert v2 not in (None, v1) and demo.status()["stableRevision"] == v2, status
    assert status["phase"] == "Degraded" and status["stableRevision"] == v2 and v3 not in (v1, v2), status
    # in order and none skipped; the index past the last step is the promotion itself
    assert canary_steps in (list(range(steps)), list(range(steps + 1))), canary_steps
    assert not unchecked, (unchecked, sorted(record.runs.values(), key=lambda r: r["time"]))
    assert weights and weights[-1] == 100.0, weights
    assert backward_moves(weights) == 0, weights
    assert max(after_rollback, default=0.0) == 0.0, after_rollback
    assert record.longest_unserved < 1.0, record.longest_unserved
    assert client_errors == 0, (demo.traffic.errors, list(demo.traffic.failures))
