"""A drifting classification stream: the online-learning example and the demo's learning scenario.

The task: ``FEATURES`` standard normal features, the label is which side of a hyperplane through the
origin a point lies on. At a known sample (``Schedule.drift_at``) the hyperplane turns by
``angle_degrees`` in the plane of the first two features, so a model that does not learn keeps
``1 - angle / 180`` of its accuracy (0.58 for 75°) while one that learns online follows the new
boundary. Later a burst of feedback carries flipped labels (``Schedule.poison_at``): label
poisoning, which a guard on the prequential accuracy catches.

``DriftStream`` sends every sample to two entry points, a model that learns online and a static copy,
and sends the learning one the sample's label as feedback; it records what each answered
(``ClientSample``), so accuracy is measured as the client sees it.
"""

from __future__ import annotations

import asyncio
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np

FEATURES = 4
DRIFT_DEGREES = 75.0
# SGD with a constant step keeps adapting; a decaying one would stop following the drift
LEARNING_PARAMS: dict[str, Any] = {
    "loss": "log_loss",
    "learning_rate": "constant",
    "eta0": 0.1,
    "alpha": 0.0001,
}


@dataclass(frozen=True)
class DriftingTask:
    """Binary labels from a hyperplane that turns by ``angle_degrees`` at the drift."""

    features: int = FEATURES
    angle_degrees: float = DRIFT_DEGREES

    def __post_init__(self) -> None:
        if self.features < 2:
            raise ValueError(f"features: needs at least 2, got {self.features}")
        if not 0 < self.angle_degrees <= 180:
            raise ValueError(f"angle_degrees: must be in (0, 180], got {self.angle_degrees}")

    def normal(self, drifted: bool) -> np.ndarray:
        angle = np.radians(self.angle_degrees if drifted else 0.0)
        vector = np.zeros(self.features)
        vector[:2] = np.cos(angle), np.sin(angle)
        return vector

    def draw(self, rng: np.random.Generator, n: int, drifted: bool) -> tuple[np.ndarray, np.ndarray]:
        x = rng.standard_normal((n, self.features))
        return x, (x @ self.normal(drifted) > 0).astype(np.int64)

    @property
    def static_accuracy_after_drift(self) -> float:
        """What a model of the old boundary scores on the new one (isotropic features)."""
        return 1.0 - self.angle_degrees / 180.0


@dataclass(frozen=True)
class Schedule:
    """Samples in each phase, in order: before the drift, drifted, poisoned feedback, recovery."""

    before: int = 450
    drifted: int = 1200
    poisoned: int = 300
    recovery: int = 900

    def __post_init__(self) -> None:
        for name in ("before", "drifted", "poisoned", "recovery"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}: must be 0 or more samples")

    @property
    def drift_at(self) -> int:
        return self.before

    @property
    def poison_at(self) -> int:
        return self.before + self.drifted

    @property
    def poison_end(self) -> int:
        return self.poison_at + self.poisoned

    @property
    def total(self) -> int:
        return self.poison_end + self.recovery

    def phase(self, index: int) -> str:
        if index < self.drift_at:
            return "before"
        if index < self.poison_at:
            return "drifted"
        if index < self.poison_end:
            return "poisoned"
        return "recovery"


def train_initial_model(path: Path, task: DriftingTask, samples: int = 2000, seed: int = 0) -> Path:
    """An SGDClassifier fitted on the boundary before the drift, saved with skops."""
    import skops.io as sio
    from sklearn.linear_model import SGDClassifier

    x, y = task.draw(np.random.default_rng(seed), samples, drifted=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a constant step on few epochs warns of convergence
        model = SGDClassifier(**LEARNING_PARAMS, random_state=seed).fit(x, y)
    path.parent.mkdir(parents=True, exist_ok=True)
    sio.dump(model, path)
    return path


@dataclass(frozen=True)
class ClientSample:
    """One sample as the client saw it; predictions None when the request failed."""

    index: int
    t: float
    phase: str
    label: int
    sent_label: int
    online: int | None
    static: int | None
    snapshot: int | None
    feedback: int
    """HTTP status of the feedback at the learning model (its upstream's when through a router); 0: none."""


def accuracy(
    outcomes: Sequence[ClientSample], which: str, first: int = 0, last: int | None = None
) -> float | None:
    """Share of samples ``first <= index < last`` that ``which`` (online or static) got right."""
    answered = [
        getattr(o, which) == o.label
        for o in outcomes
        if o.index >= first and (last is None or o.index < last) and getattr(o, which) is not None
    ]
    return sum(answered) / len(answered) if answered else None


def rolling_accuracy(outcomes: Sequence[ClientSample], which: str, window: int) -> list[tuple[float, float]]:
    """(time, accuracy over the last ``window`` answered samples) for every sample, in index order."""
    ordered = sorted((o for o in outcomes if getattr(o, which) is not None), key=lambda o: o.index)
    hits = np.array([getattr(o, which) == o.label for o in ordered], dtype=float)
    sums = np.concatenate([[0.0], np.cumsum(hits)])
    points = []
    for i, outcome in enumerate(ordered):
        start = max(0, i + 1 - window)
        points.append((outcome.t, float((sums[i + 1] - sums[start]) / (i + 1 - start))))
    return points


def infer_body(row: np.ndarray) -> dict[str, Any]:
    return {"inputs": [{"name": "input", "shape": [1, len(row)], "datatype": "FP32", "data": row.tolist()}]}


def predicted_label(response: httpx.Response) -> int | None:
    if response.status_code != 200:
        return None
    for output in response.json().get("outputs") or []:
        if output.get("name") == "label":
            return int(output["data"][0])
    return None


@dataclass
class DriftStream:
    """Sends a schedule's samples at ``rate`` a second to two entry points (see the module docstring).

    ``online`` and ``static`` answer the base URL of each entry point (None while there is none);
    they are asked again after a request gets no answer. ``clock`` stamps the outcomes.
    """

    task: DriftingTask
    schedule: Schedule
    online: Callable[[], str | None]
    static: Callable[[], str | None]
    online_model: str
    static_model: str
    rate: float = 30.0
    concurrency: int = 8
    seed: int = 1
    clock: Callable[[], float] = time.monotonic
    outcomes: list[ClientSample] = field(default_factory=list)
    transport_errors: int = 0
    marks: dict[str, float] = field(default_factory=dict)
    """When each phase began, on ``clock``."""
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _urls: dict[str, str | None] = field(default_factory=dict)

    def start(self) -> None:
        self._thread = threading.Thread(
            target=lambda: asyncio.run(self.run()), name="drift-stream", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self.join()

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the stream to end; True once it has."""
        if self._thread is not None:
            self._thread.join(timeout)
            return not self._thread.is_alive()
        return True

    @property
    def sent(self) -> int:
        return len(self.outcomes)

    async def run(self) -> None:
        rng = np.random.default_rng(self.seed)
        limit = asyncio.Semaphore(self.concurrency)
        started = time.monotonic()
        pending: set[asyncio.Task[None]] = set()
        async with httpx.AsyncClient(timeout=10.0, trust_env=False) as client:
            for index in range(self.schedule.total):
                if self._stop.is_set():
                    break
                await asyncio.sleep(max(0.0, started + index / self.rate - time.monotonic()))
                phase = self.schedule.phase(index)
                self.marks.setdefault(phase, self.clock())
                x, y = self.task.draw(rng, 1, drifted=phase != "before")
                await limit.acquire()
                task = asyncio.create_task(self._one(client, index, phase, x[0], int(y[0])))
                pending.add(task)
                task.add_done_callback(lambda done: (pending.discard(done), limit.release()))
            if pending:
                await asyncio.gather(*pending)

    async def _one(
        self, client: httpx.AsyncClient, index: int, phase: str, row: np.ndarray, label: int
    ) -> None:
        body = infer_body(row)
        online, static = await asyncio.gather(
            self._post(client, "online", f"/v2/models/{self.online_model}/infer", body),
            self._post(client, "static", f"/v2/models/{self.static_model}/infer", body),
        )
        sent_label = 1 - label if phase == "poisoned" else label
        feedback = 0
        if online is not None and online.status_code == 200:
            answer = await self._post(
                client,
                "online",
                f"/v2/models/{self.online_model}/feedback",
                {"id": online.json()["id"], "label": sent_label},
            )
            feedback = self._feedback_status(answer)
        snapshot = online.headers.get("x-mlrollouts-snapshot") if online is not None else None
        self.outcomes.append(
            ClientSample(
                index=index,
                t=self.clock(),
                phase=phase,
                label=label,
                sent_label=sent_label,
                online=predicted_label(online) if online is not None else None,
                static=predicted_label(static) if static is not None else None,
                snapshot=int(snapshot) if snapshot is not None and snapshot.isdigit() else None,
                feedback=feedback,
            )
        )

    @staticmethod
    def _feedback_status(answer: httpx.Response | None) -> int:
        if answer is None:
            return 0
        if answer.status_code == 200:
            upstream = answer.json().get("upstreamStatus")
            return int(upstream) if isinstance(upstream, int) else 200
        return answer.status_code

    async def _post(
        self, client: httpx.AsyncClient, target: str, path: str, body: dict[str, Any]
    ) -> httpx.Response | None:
        url = self._urls.get(target) or (self.online if target == "online" else self.static)()
        self._urls[target] = url
        if url is None:
            return None
        try:
            return await client.post(f"{url}{path}", json=body)
        except httpx.HTTPError:
            self.transport_errors += 1
            self._urls[target] = None
            return None
