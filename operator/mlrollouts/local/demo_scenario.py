"""What every scenario of `make demo` shares: the run's context, the scenario interface, client
traffic and Prometheus queries.

A scenario (``Scenario``) drives one resource kind on the playground from its own thread: ``run``
applies resources and waits for their phases, sampling what it shows (``sample``) about once a
second; the driver (:mod:`mlrollouts.local.demo`) draws every scenario's ``render`` section in the
live view, and at the end asks each for its ``outcome`` lines, its ``timeline`` and its plot. The
scenarios of one run share the playground, so each uses its own resource names.
"""

from __future__ import annotations

import contextlib
import json
import random
import threading
import time
from abc import ABC, abstractmethod
from collections import Counter, deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import httpx

from mlrollouts.controller.kube import KubeError, SyncKube
from mlrollouts.local.playground import Playground

Status = dict[str, Any]
PROGRESS_EVERY = 5.0
"""Seconds between progress lines when there is no live view."""


class DemoError(RuntimeError):
    pass


@dataclass
class DemoContext:
    """One run of the demo: the playground, its start time, and whether a live view is drawn."""

    playground: Playground
    live: bool = False
    t0: float = field(default_factory=time.monotonic)
    cancelled: threading.Event = field(default_factory=threading.Event)
    _supervise_lock: threading.Lock = field(default_factory=threading.Lock)

    def elapsed(self) -> float:
        return round(time.monotonic() - self.t0, 1)

    def supervise(self) -> None:
        """Restart crashed playground processes; scenarios call this from their own threads."""
        with self._supervise_lock:
            self.playground.supervise_once()


class Scenario(ABC):
    """One scenario of the demo (see the module docstring)."""

    key: ClassVar[str]
    """Short name: the prefix of its lines, its key in timeline.json."""

    def __init__(self, context: DemoContext) -> None:
        self.context = context
        self.playground = context.playground
        self.kube = SyncKube.from_environment(str(context.playground.kubeconfig))
        self.log: list[str] = []
        self.result = ""
        """What the scenario achieved, set when ``run`` completes."""
        self.stage = "starting"
        self._last_progress = 0.0

    # -- what a scenario defines ---------------------------------------------------------------------
    @abstractmethod
    def run(self) -> None:
        """The scenario's steps; raises DemoError when one does not happen in time."""

    @abstractmethod
    def status(self) -> Status:
        """The status of the resource the scenario is waiting on."""

    @abstractmethod
    def sample(self) -> str:
        """Record one sample for the live view and the plot; answer a one-line summary of it."""

    @abstractmethod
    def render(self) -> list[str]:
        """The scenario's section of the live view, from its latest sample."""

    @abstractmethod
    def outcome(self) -> list[str]:
        """Lines for the end of the demo: what the scenario did and what the client saw."""

    @abstractmethod
    def timeline(self) -> dict[str, Any]:
        """The scenario's samples and counts, for timeline.json."""

    @abstractmethod
    def plot(self, output_dir: Path) -> Path:
        """Write the scenario's figure; answer its path."""

    def stop(self) -> None:
        """Stop what the scenario started (traffic, helper processes) and its API client."""
        self.kube.close()

    # -- what scenarios share ------------------------------------------------------------------------
    def say(self, message: str) -> None:
        line = f"[{self.context.elapsed():6.1f}s] {self.key}: {message}"
        self.log.append(line)
        if not self.context.live:
            print(line, flush=True)

    def watch(self, done: Callable[[Status], Any], timeout: float, stage: str) -> Status:
        """Sample every second until ``done(status)``; DemoError after ``timeout`` seconds."""
        self.stage = stage
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.context.cancelled.is_set():
                raise DemoError(f"{stage}: stopped")
            self.context.supervise()
            status = self.status()
            summary = self.sample()
            if not self.context.live and time.monotonic() - self._last_progress >= PROGRESS_EVERY:
                self._last_progress = time.monotonic()
                print(f"[{self.context.elapsed():6.1f}s] {self.key}: {summary}", flush=True)
            if done(status):
                return status
            time.sleep(1.0)
        raise DemoError(
            f"{stage}: not done after {timeout:.0f}s; last status: {json.dumps(self.status())[:1500]}"
        )


# ----------------------------------------------------------------------------------------- traffic
def entry_point(kube: SyncKube, namespace: str, service: str) -> str | None:
    """The URL of a ready endpoint of a Service (the playground has no cluster DNS)."""
    endpoints = kube.get("v1", "Endpoints", namespace, service) or {}
    for subset in endpoints.get("subsets") or []:
        for address in subset.get("addresses") or []:
            port = subset["ports"][0]["port"]
            return f"http://{address['ip']}:{port}"
    return None


@dataclass
class TrafficGenerator:
    """POSTs one of ``bodies`` to ``path`` of a Service's entry point ``rate`` times a second and
    counts the answers by ``classify(response)``; ``errors`` counts requests that got no answer, and
    ``failures`` keeps the last few of those and of the answers that were not 2xx."""

    kube: SyncKube
    namespace: str
    service: str
    path: str
    bodies: list[dict[str, Any]]
    classify: Callable[[httpx.Response], Hashable]
    rate: float = 25.0
    counts: Counter[Any] = field(default_factory=Counter)
    errors: int = 0
    failures: deque[str] = field(default_factory=lambda: deque(maxlen=5))
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"traffic-{self.service}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def snapshot(self) -> Counter[Any]:
        with self._lock:
            return Counter(self.counts)

    def _run(self) -> None:
        rng = random.Random(0)
        url = None
        next_lookup = 0.0
        with httpx.Client(timeout=5.0) as client:
            while not self._stop.is_set():
                started = time.monotonic()
                if url is None or started >= next_lookup:
                    with contextlib.suppress(KubeError, httpx.HTTPError):
                        url = entry_point(self.kube, self.namespace, self.service) or url
                    next_lookup = started + 2.0
                if url is not None:
                    url = self._send(client, url, rng.choice(self.bodies))
                self._stop.wait(max(0.0, 1.0 / self.rate - (time.monotonic() - started)))

    def _send(self, client: httpx.Client, url: str, body: dict[str, Any]) -> str | None:
        """One request; answers the URL to use next (None: look the entry point up again)."""
        try:
            response = client.post(f"{url}{self.path}", json=body)
        except httpx.HTTPError as exc:
            with self._lock:
                self.errors += 1
                self.failures.append(f"no answer: {type(exc).__name__}: {exc}")
            return None
        key = self.classify(response)
        with self._lock:
            self.counts[key] += 1
            if not response.is_success:
                self.failures.append(f"{response.status_code}: {response.text[:300]}")
        return url


# -------------------------------------------------------------------------------------- prometheus
def prometheus_vector(prometheus: str, query: str, label: str) -> dict[str, float]:
    """An instant query's series by the value of ``label``; series without a number are left out."""
    try:
        response = httpx.get(f"{prometheus}/api/v1/query", params={"query": query}, timeout=2.0)
        result = response.json()["data"]["result"]
    except (httpx.HTTPError, KeyError, ValueError):
        return {}
    values = {}
    for series in result:
        value = float(series["value"][1])
        if value == value:  # NaN: no traffic in the window
            values[series["metric"].get(label, "?")] = value
    return values


def prometheus_value(prometheus: str, query: str) -> float | None:
    """An instant query that answers one number (or nothing)."""
    values = prometheus_vector(prometheus, query, "__none__")
    return next(iter(values.values()), None)
