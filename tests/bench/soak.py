"""Soak: the playground under mixed traffic for a long while, with a canary every few minutes.

On the local playground (API emulator, Prometheus, process kubelet, the real operator, real model
servers and a real router) one ModelDeployment (``examples/canary/playground.yaml``) serves the iris
models of `make demo`. For ``SOAK_MINUTES`` (``--minutes``; default 30) client threads send, through
the router:

- single-row and batch (2..32 rows) V2 inference requests;
- malformed requests, each of which must be answered with a 4xx: a body that is not JSON, a tensor
  of the wrong shape, a request without ``inputs``, data that are not numbers, a model without a
  route, feedback with a forged id;
- feedback (``POST /v2/models/iris/feedback``) for the ids of earlier answers, one reward each; a
  reward sent again is one of the requests that must get a 4xx (409: feedback is counted once).

Every ``--rollout-every`` seconds (default 180; a quarter of a shorter run) a new canary starts, alternating the two model files
with a new ``spec.model.version`` (a new revision each time), and is left to promote (shadow -> 10 %
-> 50 % -> 100 % under analysis by the real Prometheus). No canary starts in the last 90 s.

Every ``--sample-every`` seconds (default 15) RSS, open file descriptors (``/proc/<pid>/fd``) and
threads (``/proc/<pid>/status``) are sampled for the operator, the router and every model server
(the kubelet's child processes), plus the API emulator and the kubelet for information. The router
and the operator are tracked over the whole run (they must keep their process); a server belongs to
one revision, so each server process is judged over its own life. Growth compares the median of the
first three samples after the warm-up (the first 20 % of the run, or of a server's life) with the
median of the last three.

Targets (the exit status is 1 when one is missed): RSS growth <= 5 % for the router, the operator and
each server followed for at least 6 samples after its warm-up; fd growth <= 16 and thread growth <= 8
for the router and the operator; no 5xx and no request without an answer; every malformed request
answered with a 4xx; every started canary promoted, and at least one.

    SOAK_MINUTES=6 python tests/bench/soak.py [--rollout-every 180] [--rate 30] [--keep-state DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

from mlrollouts.controller.kube import KubeError, SyncKube
from mlrollouts.core.names import API_VERSION
from mlrollouts.local.demo_canary import EXAMPLE, DemoModels, train_demo_models
from mlrollouts.local.demo_scenario import entry_point
from mlrollouts.local.playground import PROMETHEUS_INSTALL_HINT, Playground

RSS_TARGET = 5.0  # % growth after warm-up
FD_TARGET = 16  # descriptors more after warm-up (router, operator)
THREAD_TARGET = 8  # threads more after warm-up (router, operator)
WARMUP = 0.2  # share of the run (or of a server's life) left out
JUDGED_SAMPLES = 6  # a server needs this many samples after its warm-up to be judged
QUIET_END = 90.0  # seconds at the end in which no canary starts
STABLE = ("operator", "router")


# ------------------------------------------------------------------------------------- processes
@dataclass
class Sample:
    t: float
    rss_mb: float
    fds: int
    threads: int


@dataclass
class Tracked:
    component: str  # operator, router, server, apiserver, kubelet
    pid: int
    label: str  # what the table shows: the revision of a server, else the component
    samples: list[Sample] = field(default_factory=list)
    gone: bool = False


def read_proc(pid: int) -> tuple[float, int, int] | None:
    """(RSS in MB, open descriptors, threads) of a live process; None when it is gone."""
    try:
        rss_kb, threads = 0, 0
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                rss_kb = int(line.split()[1])
            elif line.startswith("Threads:"):
                threads = int(line.split()[1])
        fds = len(os.listdir(f"/proc/{pid}/fd"))
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return rss_kb / 1024, fds, threads


def children_of(ppid: int) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            stat = (entry / "stat").read_text()
            if int(stat.rsplit(")", 1)[1].split()[1]) == ppid:
                pids.append(int(entry.name))
    return pids


class Sampler:
    """Samples the playground's processes; the kubelet's children are found by parent pid and named
    by their pod (the kubelet runs each container in its pod's directory)."""

    def __init__(self, playground: Playground, kube: SyncKube, namespace: str, name: str) -> None:
        self.playground = playground
        self.kube = kube
        self.namespace = namespace
        self.name = name
        self.tracked: dict[tuple[str, int], Tracked] = {}
        self.t0 = time.monotonic()

    def _pod_labels(self) -> dict[str, dict[str, str]]:
        try:
            pods = self.kube.list("v1", "Pod", self.namespace)
        except KubeError:
            return {}
        return {p["metadata"]["name"]: p["metadata"].get("labels") or {} for p in pods}

    def _current(self) -> list[tuple[str, int, str]]:
        found = []
        for child in ("operator", "apiserver", "kubelet"):
            popen = self.playground.child(child).popen
            if popen is not None and popen.poll() is None:
                found.append((child, popen.pid, child))
        kubelet = self.playground.child("kubelet").popen
        if kubelet is None:
            return found
        labels = None
        for pid in children_of(kubelet.pid):
            try:
                pod = Path(os.readlink(f"/proc/{pid}/cwd")).name
            except OSError:
                continue
            if pod.startswith(f"{self.name}-router"):
                found.append(("router", pid, "router"))
            elif pod.startswith(f"{self.name}-"):
                if labels is None:
                    labels = self._pod_labels()
                revision = (labels.get(pod) or {}).get("mlrollouts.io/revision", pod)
                found.append(("server", pid, revision))
        return found

    def sample(self) -> None:
        now = time.monotonic() - self.t0
        seen = set()
        for component, pid, label in self._current():
            key = (component, pid)
            stats = read_proc(pid)
            if stats is None:
                continue
            seen.add(key)
            tracked = self.tracked.setdefault(key, Tracked(component, pid, label))
            tracked.samples.append(Sample(now, *stats))
        for key, tracked in self.tracked.items():
            if key not in seen:
                tracked.gone = True

    def pids(self, component: str) -> list[Tracked]:
        return [t for t in self.tracked.values() if t.component == component]


def growth(samples: list[Sample], warmup_until: float) -> tuple[float, int, int, int] | None:
    """(RSS growth %, fd growth, thread growth, samples judged) after ``warmup_until``; None without
    at least two samples after it."""
    after = [s for s in samples if s.t >= warmup_until]
    if len(after) < 2:
        return None
    k = min(3, len(after) // 2)
    head, tail = after[:k], after[-k:]

    def med(values: list[Sample], attr: str) -> float:
        return statistics.median(getattr(s, attr) for s in values)

    rss0 = med(head, "rss_mb")
    return (
        100 * (med(tail, "rss_mb") - rss0) / rss0,
        round(med(tail, "fds") - med(head, "fds")),
        round(med(tail, "threads") - med(head, "threads")),
        len(after),
    )


# --------------------------------------------------------------------------------------- traffic
MALFORMED = (
    "not-json",
    "wrong-shape",
    "no-inputs",
    "not-numbers",
    "unknown-model",
    "forged-feedback",
    "feedback-again",
)


@dataclass
class Traffic:
    """Client threads sending the request mix through the router; answers counted by (kind, code)."""

    kubeconfig: str
    namespace: str
    service: str
    model: str
    rows: list[list[float]]
    rate: float = 30.0
    threads: int = 3
    counts: Counter[tuple[str, int]] = field(default_factory=Counter)
    no_answer: Counter[str] = field(default_factory=Counter)
    failures: deque[str] = field(default_factory=lambda: deque(maxlen=20))
    ids: deque[str] = field(default_factory=lambda: deque(maxlen=200))
    rewarded: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=50))
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stop: threading.Event = field(default_factory=threading.Event)
    _workers: list[threading.Thread] = field(default_factory=list)

    def start(self) -> None:
        for i in range(self.threads):
            worker = threading.Thread(target=self._run, args=(i,), name=f"soak-traffic-{i}", daemon=True)
            worker.start()
            self._workers.append(worker)

    def stop(self) -> None:
        self._stop.set()
        for worker in self._workers:
            worker.join(timeout=10)

    def snapshot(self) -> tuple[Counter[tuple[str, int]], Counter[str]]:
        with self._lock:
            return Counter(self.counts), Counter(self.no_answer)

    def _request(self, rng: random.Random) -> tuple[str, str, bytes]:
        """(kind, path, body) of the next request."""
        infer = f"/v2/models/{self.model}/infer"
        roll = rng.random()
        if roll < 0.55:
            row = rng.choice(self.rows)
            return "single", infer, self._body(1, row)
        if roll < 0.75:
            n = rng.randint(2, 32)
            data = [v for _ in range(n) for v in rng.choice(self.rows)]
            return "batch", infer, self._body(n, data)
        if roll < 0.88:
            with self._lock:  # one reward per answer: a second one is refused (feedback-again)
                response_id = self.ids.popleft() if self.ids else None
            if response_id is not None:
                body = {"id": response_id, "reward": float(rng.random() < 0.7)}
                with self._lock:
                    self.rewarded.append(body)
                return "feedback", f"/v2/models/{self.model}/feedback", json.dumps(body).encode()
        kind = rng.choice(MALFORMED)
        if kind == "feedback-again":
            with self._lock:
                again = self.rewarded[0] if self.rewarded else {"id": "forged.0.0", "reward": 1.0}
            return kind, f"/v2/models/{self.model}/feedback", json.dumps(again).encode()
        if kind == "not-json":
            return kind, infer, b"{not json"
        if kind == "wrong-shape":
            return kind, infer, self._body(1, [1.0, 2.0, 3.0], width=3)
        if kind == "no-inputs":
            return kind, infer, b'{"parameters": {}}'
        if kind == "not-numbers":
            return kind, infer, self._body(1, ["a", "b", "c", "d"])
        if kind == "unknown-model":
            return kind, "/v2/models/no-such-model/infer", self._body(1, self.rows[0])
        body = {"id": "forged.0.0", "reward": 1.0}
        return kind, f"/v2/models/{self.model}/feedback", json.dumps(body).encode()

    @staticmethod
    def _body(n: int, data: list[Any], width: int = 4) -> bytes:
        tensor = {"name": "input", "shape": [n, width], "datatype": "FP32", "data": data}
        return json.dumps({"inputs": [tensor]}).encode()

    def _run(self, index: int) -> None:
        rng = random.Random(index)
        interval = self.threads / self.rate
        url: str | None = None
        next_lookup = 0.0
        kube = SyncKube.from_environment(self.kubeconfig)
        try:
            with httpx.Client(timeout=10.0, headers={"content-type": "application/json"}) as client:
                while not self._stop.is_set():
                    started = time.monotonic()
                    if url is None or started >= next_lookup:
                        with contextlib.suppress(KubeError, httpx.HTTPError):
                            url = entry_point(kube, self.namespace, self.service) or url
                        next_lookup = started + 5.0
                    if url is not None and not self._send(client, url, *self._request(rng)):
                        url = None
                    self._stop.wait(max(0.0, interval - (time.monotonic() - started)))
        finally:
            kube.close()

    def _send(self, client: httpx.Client, url: str, kind: str, path: str, body: bytes) -> bool:
        try:
            response = client.post(f"{url}{path}", content=body)
        except httpx.HTTPError as exc:
            with self._lock:
                self.no_answer[kind] += 1
                self.failures.append(f"{kind}: no answer: {type(exc).__name__}: {exc}")
            return False
        with self._lock:
            self.counts[(kind, response.status_code)] += 1
            if response.status_code >= 500 or (kind in MALFORMED) != (400 <= response.status_code < 500):
                self.failures.append(f"{kind}: {response.status_code}: {response.text[:300]}")
            if kind in ("single", "batch") and response.status_code == 200:
                with contextlib.suppress(ValueError, KeyError, TypeError):
                    self.ids.append(response.json()["id"])
        return True


# -------------------------------------------------------------------------------------- rollouts
class Rollouts:
    """The ModelDeployment under soak: the first revision, then one canary at a time."""

    def __init__(self, kube: SyncKube, models: DemoModels) -> None:
        self.kube = kube
        self.models = models
        self.manifest = yaml.safe_load(EXAMPLE.read_text())
        self.namespace = self.manifest["metadata"]["namespace"]
        self.name = self.manifest["metadata"]["name"]
        self.model = self.manifest["spec"]["model"]["name"]
        self.version = 0
        self.started = 0
        self.promoted = 0
        self.failed: list[str] = []
        self.durations: list[float] = []
        self._since = 0.0
        self._from: str | None = None

    def status(self) -> dict[str, Any]:
        obj = self.kube.get(API_VERSION, "ModelDeployment", self.namespace, self.name) or {}
        return obj.get("status") or {}

    def _model(self) -> dict[str, str]:
        self.version += 1
        path = self.models.v1 if self.version % 2 else self.models.v2
        return {"uri": path.resolve().as_uri(), "version": str(self.version)}

    def create(self, timeout: float = 180.0) -> None:
        body = json.loads(json.dumps(self.manifest))
        body["spec"]["model"].update(self._model())
        self.kube.create(body)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = self.status()
            if (
                status.get("phase") == "Healthy"
                and status.get("stableRevision")
                and entry_point(self.kube, self.namespace, self.name) is not None
            ):
                return
            time.sleep(1.0)
        raise RuntimeError(f"the first revision is not Healthy after {timeout:.0f}s: {self.status()}")

    @property
    def in_progress(self) -> bool:
        return self._from is not None

    def start_canary(self) -> None:
        self._from = self.status().get("stableRevision")
        self._since = time.monotonic()
        self.kube.merge_patch(
            API_VERSION, "ModelDeployment", self.namespace, self.name, {"spec": {"model": self._model()}}
        )
        self.started += 1

    def poll(self, deadline: float = 300.0) -> str | None:
        """One look at a canary in progress: a line when it ended (promoted or not)."""
        if self._from is None:
            return None
        status = self.status()
        stable, phase = status.get("stableRevision"), status.get("phase")
        elapsed = time.monotonic() - self._since
        line = None
        if phase == "Healthy" and stable not in (None, self._from) and not status.get("candidateRevision"):
            self.promoted += 1
            self.durations.append(elapsed)
            line = f"canary {self.version} promoted: revision {stable} after {elapsed:.0f}s"
        elif phase in ("Degraded", "Failed") or elapsed > deadline:
            message = f"canary {self.version} not promoted: phase {phase}, {status.get('message', '')}"
            self.failed.append(message)
            line = message
        if line is not None:
            self._from = None
        return line


# ------------------------------------------------------------------------------------------ run
@dataclass
class Row:
    what: str
    value: str
    target: str
    ok: bool | None  # None: information only


def judge_processes(sampler: Sampler, duration: float) -> list[Row]:
    rows = []
    warmup = WARMUP * duration
    for component in STABLE:
        processes = sampler.pids(component)
        if len(processes) != 1:
            pids = ", ".join(str(t.pid) for t in processes)
            rows.append(Row(f"{component}: processes", f"{len(processes)} ({pids})", "1", False))
        for tracked in processes:
            g = growth(tracked.samples, warmup)
            if g is None:
                rows.append(Row(f"{component} {tracked.pid}", "too few samples", "", None))
                continue
            rss, fds, threads, n = g
            last = tracked.samples[-1]
            rows.append(
                Row(
                    f"{component} RSS growth ({last.rss_mb:.0f} MB at end, {n} samples)",
                    f"{rss:+.1f} %",
                    f"<= {RSS_TARGET:.0f} %",
                    rss <= RSS_TARGET,
                )
            )
            rows.append(
                Row(
                    f"{component} fd growth ({last.fds} at end)",
                    f"{fds:+d}",
                    f"<= {FD_TARGET}",
                    fds <= FD_TARGET,
                )
            )
            rows.append(
                Row(
                    f"{component} thread growth ({last.threads} at end)",
                    f"{threads:+d}",
                    f"<= {THREAD_TARGET}",
                    threads <= THREAD_TARGET,
                )
            )
    for component in ("apiserver", "kubelet"):
        for tracked in sampler.pids(component):
            g = growth(tracked.samples, warmup)
            if g is not None:
                rss, fds, threads, _ = g
                last = tracked.samples[-1]
                rows.append(
                    Row(
                        f"{component} (information): RSS {last.rss_mb:.0f} MB, {last.fds} fds",
                        f"RSS {rss:+.1f} %, fds {fds:+d}, threads {threads:+d}",
                        "",
                        None,
                    )
                )
    for tracked in sorted(sampler.pids("server"), key=lambda t: t.samples[0].t):
        first, last = tracked.samples[0], tracked.samples[-1]
        life = last.t - first.t
        g = growth(tracked.samples, first.t + WARMUP * life)
        end = "exited" if tracked.gone else "running"
        what = (
            f"server {tracked.label} pid {tracked.pid} ({first.t:.0f}-{last.t:.0f}s, {end}, "
            f"{first.rss_mb:.0f}->{last.rss_mb:.0f} MB, fds {first.fds}->{last.fds})"
        )
        if g is None or g[3] < JUDGED_SAMPLES:
            rows.append(Row(what, "short life: not judged", "", None))
            continue
        rss, fds, threads, _ = g
        rows.append(Row(what, f"RSS {rss:+.1f} %, fds {fds:+d}", f"<= {RSS_TARGET:.0f} %", rss <= RSS_TARGET))
    return rows


def judge_traffic(traffic: Traffic) -> list[Row]:
    counts, no_answer = traffic.snapshot()
    by_kind: dict[str, Counter[int]] = {}
    for (kind, code), n in counts.items():
        by_kind.setdefault(kind, Counter())[code] += n
    total = sum(counts.values())
    five = sum(n for (_, code), n in counts.items() if code >= 500)
    malformed = sum(n for (kind, _), n in counts.items() if kind in MALFORMED)
    malformed_4xx = sum(n for (kind, code), n in counts.items() if kind in MALFORMED and 400 <= code < 500)
    rows = [Row("requests answered", str(total), "", None)]
    for kind in ("single", "batch", "feedback", *MALFORMED):
        if kind in by_kind:
            codes = ", ".join(f"{code}: {n}" for code, n in sorted(by_kind[kind].items()))
            rows.append(Row(f"  {kind}", codes, "", None))
    rows.append(Row("5xx answers", str(five), "0", five == 0))
    rows.append(Row("requests without an answer", str(sum(no_answer.values())), "0", not no_answer))
    rows.append(
        Row(
            "malformed requests answered 4xx",
            f"{malformed_4xx} / {malformed}",
            "all",
            malformed_4xx == malformed,
        )
    )
    ok_infer = sum(n for (kind, code), n in counts.items() if kind in ("single", "batch") and code == 200)
    rows.append(Row("inference answered 200", str(ok_infer), "> 0", ok_infer > 0))
    return rows


def print_table(rows: list[Row]) -> None:
    width = max(len(r.what) for r in rows) + 2
    print(f"\n{'measure':<{width}} {'value':<34} {'target':<10} result")
    for r in rows:
        result = "" if r.ok is None else ("ok" if r.ok else "MISSED")
        print(f"{r.what:<{width}} {r.value:<34} {r.target:<10} {result}".rstrip())


def soak(args: argparse.Namespace, root: Path) -> int:
    duration = args.minutes * 60.0
    models = train_demo_models(root / "models")
    playground = Playground(args.keep_state or root / "state").start()
    kube = SyncKube.from_environment(str(playground.kubeconfig))
    traffic: Traffic | None = None
    rollouts = Rollouts(kube, models)
    try:
        print(f"playground up ({playground.state_dir}); deploying the first revision", flush=True)
        rollouts.create()
        traffic = Traffic(
            str(playground.kubeconfig),
            rollouts.namespace,
            rollouts.name,
            rollouts.model,
            models.rows,
            rate=args.rate,
        )
        traffic.start()
        sampler = Sampler(playground, kube, rollouts.namespace, rollouts.name)
        t0 = sampler.t0
        next_sample, next_canary = 0.0, args.rollout_every
        print(f"soak: {args.minutes:g} min, a canary every {args.rollout_every:.0f}s", flush=True)
        while (now := time.monotonic() - t0) < duration:
            playground.supervise_once()
            if now >= next_sample:
                sampler.sample()
                next_sample += args.sample_every
                counts, no_answer = traffic.snapshot()
                five = sum(n for (_, c), n in counts.items() if c >= 500)
                stable = [
                    t.samples[-1] for t in sampler.tracked.values() if t.component in STABLE and not t.gone
                ]
                mem = " ".join(f"{s.rss_mb:.0f}MB/{s.fds}fd" for s in stable)
                print(
                    f"[{now:6.0f}s] answers {sum(counts.values())} 5xx {five} no-answer "
                    f"{sum(no_answer.values())} | operator,router {mem} | canaries {rollouts.promoted}/"
                    f"{rollouts.started}",
                    flush=True,
                )
            line = rollouts.poll()
            if line:
                print(f"[{now:6.0f}s] {line}", flush=True)
            if not rollouts.in_progress and now >= next_canary and now < duration - QUIET_END:
                rollouts.start_canary()
                print(f"[{now:6.0f}s] canary {rollouts.version} started", flush=True)
                next_canary = now + args.rollout_every
            time.sleep(1.0)
        sampler.sample()
        # a canary still going on at the end is given time to finish (traffic keeps flowing)
        end = time.monotonic() + 240
        while rollouts.in_progress and time.monotonic() < end:
            if line := rollouts.poll():
                print(f"[{time.monotonic() - t0:6.0f}s] {line}", flush=True)
            time.sleep(1.0)
        traffic.stop()
        rows = judge_processes(sampler, duration)
        rows += judge_traffic(traffic)
        durations = ", ".join(f"{d:.0f}" for d in rollouts.durations)
        rows.append(
            Row(
                f"canaries promoted (seconds each: {durations or '-'})",
                f"{rollouts.promoted} / {rollouts.started}",
                ">= 1, all",
                rollouts.promoted >= 1 and rollouts.promoted == rollouts.started,
            )
        )
        rows.extend(Row(f"  {failure}", "", "", False) for failure in rollouts.failed)
        print_table(rows)
        if traffic.failures:
            print("\nlast unexpected answers:")
            for failure in traffic.failures:
                print(f"  {failure}")
        print(f"\nload average {' '.join(f'{x:.2f}' for x in os.getloadavg())} (shared machine: noisy)")
        missed = [r.what for r in rows if r.ok is False]
        if missed:
            print(f"\ntargets missed: {len(missed)}")
            return 1
        print("\nall targets met")
        return 0
    finally:
        if traffic is not None:
            traffic.stop()
        kube.close()
        playground.stop()


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--minutes",
        type=float,
        default=os.environ.get("SOAK_MINUTES", "30"),
        help="minutes of traffic (default: $SOAK_MINUTES, else 30)",
    )
    parser.add_argument(
        "--rollout-every",
        type=float,
        help="seconds between canary starts (default: 180, or a quarter of a run shorter than 12 minutes)",
    )
    parser.add_argument("--sample-every", type=float, default=15.0, help="seconds between process samples")
    parser.add_argument("--rate", type=float, default=30.0, help="requests per second (all kinds)")
    parser.add_argument("--keep-state", type=Path, help="playground state directory to keep (logs)")
    args = parser.parse_args()
    if args.minutes <= 0:
        parser.error("--minutes (SOAK_MINUTES) must be positive")
    if args.rollout_every is None:
        args.rollout_every = min(180.0, args.minutes * 60 / 4)
    if shutil.which("prometheus") is None:
        print(f"soak needs Prometheus: {PROMETHEUS_INSTALL_HINT}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="soak-") as tmp:
        return soak(args, Path(tmp))


if __name__ == "__main__":
    sys.exit(main())
