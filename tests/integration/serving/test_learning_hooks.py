"""A real model server with online learning on: requests logged to a learner, snapshots hot-loaded.

The learner is a real HTTP server on a loopback port that records the batches it gets; snapshots
are published, signed, into a directory with the learner's own publishing functions; the server is
a real ``mlserving serve`` process with ``--learner-url``, ``--snapshot-uri`` and
``--snapshot-key-file`` (and the default poll interval of 0.5 s).
"""

from __future__ import annotations

import asyncio
import json
import shutil
import threading
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import numpy as np
import pytest

from mlserving.learning.location import StorageLocation
from mlserving.learning.snapshots import SnapshotStore, serving_model
from support.models import RunningServer, metric_value, serving

pytestmark = pytest.mark.integration

KEY = b"integration-signing-key-0123456789"
MODEL = "iris"


# ---------------------------------------------------------------- a learner on a loopback port


class LogSink:
    """Records every ``POST /v1/log`` batch; answers feedback for ids it was sent."""

    def __init__(self) -> None:
        self.batches: list[list[dict[str, Any]]] = []
        self.feedback: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        sink = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                document = json.loads(self.rfile.read(int(self.headers["content-length"])))
                status, answer = sink.answer(self.path, document)
                body = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def answer(self, path: str, document: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        with self.lock:
            if path == "/v1/log":
                self.batches.append(document["records"])
                return 200, {"accepted": len(document["records"]), "ignored": 0, "rejected": []}
            self.feedback.append(document)
            if any(r["id"] == document["id"] for r in self.records()):
                return 200, {"id": document["id"], "outcome": "joined", "rows": 1}
            return 404, {"error": "id: unknown response id", "outcome": "unknown"}

    def records(self) -> list[dict[str, Any]]:
        return [record for batch in self.batches for record in batch]

    def ids(self) -> set[str]:
        with self.lock:
            return {record["id"] for record in self.records()}


# ---------------------------------------------------------------- snapshots


@dataclass
class Publisher:
    """Publishes numbered, signed snapshots of a few fitted classifiers."""

    store: SnapshotStore
    models: list[tuple[str, bytes, dict[str, Any]]]
    next_version: int = 0
    published: list[int] = field(default_factory=list)

    def publish(self, key: bytes = KEY) -> int:
        version = self.next_version
        name, data, info = self.models[version % len(self.models)]
        fields = {"model": MODEL, "parent": self.published[-1] if self.published else None, "serving": info}
        self.store.publish(version, {name: data, "learner.skops": b"state"}, fields, key)
        self.next_version += 1
        self.published.append(version)
        return version

    def publish_corrupted(self, staging: Path) -> int:
        """A snapshot whose model file no longer matches the checksum its signed manifest gives."""
        version = self.next_version
        name, data, info = self.models[0]
        elsewhere = SnapshotStore(StorageLocation(staging.as_uri()))
        elsewhere.publish(version, {name: data, "learner.skops": b"state"}, {"serving": info}, KEY)
        (staging / "snapshots" / str(version) / name).write_bytes(data[:-8] + b"tampered")
        live = Path(self.store.location.local_root) / "snapshots" / str(version)
        shutil.copytree(staging / "snapshots" / str(version), live)
        self.store.point_latest(version)
        self.store.sync_serving()
        self.next_version += 1
        return version


def classifiers() -> list[Any]:
    from sklearn.datasets import load_iris
    from sklearn.linear_model import SGDClassifier

    x, y = load_iris(return_X_y=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return [
            SGDClassifier(loss="log_loss", alpha=alpha, random_state=0).fit(x, y)
            for alpha in (0.1, 0.01, 0.001)
        ]


@dataclass
class Replica:
    server: RunningServer
    sink: LogSink
    publisher: Publisher
    base: Path

    @property
    def infer_url(self) -> str:
        return f"{self.server.url}/v2/models/{MODEL}/infer"

    def metric(self, name: str) -> float | None:
        return metric_value(httpx.get(f"{self.server.url}/metrics").text, name, model=MODEL)

    def served_snapshot(self) -> str | None:
        response = httpx.post(self.infer_url, json=self.server.infer_body([[5.1, 3.5, 1.4, 0.2]]))
        assert response.status_code == 200, response.text
        header = response.headers.get("x-mlrollouts-snapshot")
        assert header == _parameter(response.json()), "the header and parameters.snapshot disagree"
        return header


def _parameter(answer: dict[str, Any]) -> str | None:
    value = (answer.get("parameters") or {}).get("snapshot")
    return None if value is None else str(value)


@pytest.fixture(scope="module")
def replica(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Replica]:
    import skops.io as sio

    base = tmp_path_factory.mktemp("learning-replica")
    fitted = classifiers()
    initial = base / "initial.skops"
    sio.dump(fitted[0], initial)
    key_file = base / "signing.key"
    key_file.write_bytes(KEY + b"\n")
    store = SnapshotStore(StorageLocation((base / "store").as_uri()))
    sink = LogSink()
    sink.thread.start()
    extra = [
        "--learner-url",
        sink.url,
        "--learning-log-batch",
        "64",
        "--snapshot-uri",
        store.location.uri,
        "--snapshot-key-file",
        str(key_file),
        "--download-dir",
        str(base / "downloads"),
    ]
    try:
        with serving(base, initial, name=MODEL, extra=extra) as server:
            yield Replica(server, sink, Publisher(store, [serving_model(e) for e in fitted]), base)
    finally:
        sink.server.shutdown()
        sink.server.server_close()


def wait_for(predicate, timeout: float, message: str) -> float:
    """Seconds until ``predicate`` held; fails after ``timeout``."""
    started = time.monotonic()
    while not predicate():
        assert time.monotonic() - started < timeout, f"timed out after {timeout}s waiting for {message}"
        time.sleep(0.01)
    return time.monotonic() - started


# ---------------------------------------------------------------- tests


def test_requests_reach_the_learner_in_batches_and_labels_are_forwarded(replica: Replica):
    rows = np.random.default_rng(1).uniform(0.1, 7.0, size=(120, 4))

    async def send_all() -> list[dict[str, Any]]:
        async with httpx.AsyncClient(timeout=30) as client:
            answers = await asyncio.gather(
                *(
                    client.post(replica.infer_url, json=replica.server.infer_body(row[None, :]))
                    for row in rows
                )
            )
        assert all(a.status_code == 200 for a in answers)
        return [a.json() for a in answers]

    batches_before = len(replica.sink.batches)
    answers = asyncio.run(send_all())
    v1 = httpx.post(f"{replica.server.url}/v1/models/{MODEL}:predict", json={"instances": rows[:2].tolist()})
    ids = {a["id"] for a in answers} | {v1.json()["id"]}
    wait_for(lambda: ids <= replica.sink.ids(), 5, "every request logged")

    batches = replica.sink.batches[batches_before:]
    assert len(batches) < len(ids) and max(len(b) for b in batches) <= 64
    logged = {r["id"]: r for b in batches for r in b}
    first = answers[0]
    np.testing.assert_allclose(logged[first["id"]]["features"], rows[:1], rtol=1e-6)
    assert logged[first["id"]]["prediction"] == first["outputs"][0]["data"]
    assert len(logged[v1.json()["id"]]["features"]) == 2
    assert replica.metric("mlserving_learning_log_dropped_total") == 0

    feedback = f"{replica.server.url}/v2/models/{MODEL}/feedback"
    joined = httpx.post(feedback, json={"id": first["id"], "label": 1})
    assert joined.status_code == 200 and joined.json()["learner"]["outcome"] == "joined"
    forged = httpx.post(feedback, json={"id": "forged-id", "label": 1})
    assert forged.status_code == 404 and forged.json()["outcome"] == "unknown"
    assert replica.sink.feedback[-2:] == [{"id": first["id"], "label": 1}, {"id": "forged-id", "label": 1}]


def test_a_published_snapshot_is_served_within_a_second(replica: Replica):
    version = replica.publisher.publish()
    took = wait_for(lambda: replica.served_snapshot() == str(version), 5, f"snapshot {version} served")
    assert took < 1.0, f"snapshot {version} served {took:.2f}s after it was published"
    assert replica.metric("mlserving_snapshot_version") == version


def test_tampered_snapshots_are_refused_and_serving_continues(replica: Replica):
    good = replica.publisher.publish()
    wait_for(lambda: replica.served_snapshot() == str(good), 5, f"snapshot {good} served")
    refused_before = replica.metric("mlserving_snapshot_refused_total") or 0

    # One at a time: a replica serves the latest snapshot and skips any published before it.
    for tamper, refused in ((_forged, refused_before + 1), (_corrupted, refused_before + 2)):
        tamper(replica)
        wait_for(lambda n=refused: replica.metric("mlserving_snapshot_refused_total") == n, 5, "a refusal")
        for _ in range(10):
            assert replica.served_snapshot() == str(good)
        assert replica.metric("mlserving_snapshot_version") == good

    after = replica.publisher.publish()
    wait_for(lambda: replica.served_snapshot() == str(after), 5, f"snapshot {after} served")


def _forged(replica: Replica) -> None:
    replica.publisher.publish(key=b"another-key-that-is-not-the-signer")


def _corrupted(replica: Replica) -> None:
    replica.publisher.publish_corrupted(replica.base / "staging")


def test_no_request_fails_across_a_dozen_swaps_under_load(replica: Replica):
    swaps, concurrency = 12, 200
    body = replica.server.infer_body([[6.2, 2.9, 4.3, 1.3]])
    outcomes: dict[str, int] = {}
    seen: set[str] = set()

    async def worker(session: aiohttp.ClientSession, done: asyncio.Event) -> None:
        while not done.is_set():
            try:
                async with session.post(replica.infer_url, json=body) as response:
                    answer = await response.json()
                    key = str(response.status)
                    snapshot = response.headers.get("x-mlrollouts-snapshot")
                    if response.status == 200 and snapshot != _parameter(answer):
                        key = "header and parameters disagree"
                    seen.add(str(snapshot))
            except Exception as exc:
                key = type(exc).__name__
            outcomes[key] = outcomes.get(key, 0) + 1

    async def load() -> list[int]:
        done = asyncio.Event()
        connector = aiohttp.TCPConnector(limit=concurrency)
        versions = []
        async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(30)) as session:
            workers = [asyncio.create_task(worker(session, done)) for _ in range(concurrency)]
            for _ in range(swaps):
                version = await asyncio.to_thread(replica.publisher.publish)
                versions.append(version)
                await asyncio.to_thread(
                    wait_for, lambda v=version: replica.metric("mlserving_snapshot_version") == v, 10, "swap"
                )
            done.set()
            await asyncio.gather(*workers)
        return versions

    versions = asyncio.run(load())
    assert set(outcomes) == {"200"}, outcomes
    assert outcomes["200"] >= 10 * swaps
    assert {str(v) for v in versions} <= seen
    assert replica.metric("mlserving_snapshot_loads_total") >= swaps


def test_a_pin_in_the_store_rolls_replicas_back_without_a_restart(replica: Replica):
    older = replica.publisher.publish()
    newer = replica.publisher.publish()
    wait_for(lambda: replica.served_snapshot() == str(newer), 5, f"snapshot {newer} served")
    replica.publisher.store.pin(older)
    took = wait_for(lambda: replica.served_snapshot() == str(older), 5, f"pinned snapshot {older}")
    assert took < 1.0 and replica.metric("mlserving_snapshot_version") == older
    replica.publisher.store.pin(None)
    wait_for(lambda: replica.served_snapshot() == str(newer), 5, f"snapshot {newer} again")


def test_a_pinned_snapshot_is_served_instead_of_the_latest(replica: Replica, tmp_path: Path):
    if not replica.publisher.published:
        replica.publisher.publish()
    pinned = replica.publisher.published[0]
    latest = replica.publisher.publish()
    extra = [
        "--snapshot-uri",
        replica.publisher.store.location.uri,
        "--snapshot-key-file",
        str(replica.base / "signing.key"),
        "--pinned-snapshot",
        str(pinned),
    ]
    with serving(tmp_path, replica.base / "initial.skops", name=MODEL, extra=extra) as server:
        pinned_replica = Replica(server, replica.sink, replica.publisher, replica.base)
        wait_for(lambda: pinned_replica.served_snapshot() == str(pinned), 5, f"pinned snapshot {pinned}")
        time.sleep(1.0)  # two polls later, still the pinned one
        assert pinned_replica.served_snapshot() == str(pinned) != str(latest)
