"""The serving replica's side of online learning: the request log, feedback forwarding, snapshot swaps.

The learner is a real HTTP server on a loopback port (aiohttp), the model a real ONNX file; the
runtimes swapped in are small fakes implementing ``ModelRuntime``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import pytest
from aiohttp import web
from prometheus_client import generate_latest

from mlserving.learning.manifest import SnapshotError
from mlserving.runtimes.base import ModelRuntime, RuntimeInfo, TensorSpec
from mlserving.server.app import InferenceServer
from mlserving.server.dataplane import DataPlane
from mlserving.server.hotload import IncompatibleSnapshot, SnapshotHotLoader
from mlserving.server.metrics import LearningMetrics
from mlserving.server.protocol import decode_request
from mlserving.settings import ServerSettings
from support.models import metric_value, sklearn_to_onnx

ROWS = np.array([[5.1, 3.5, 1.4, 0.2], [6.2, 2.9, 4.3, 1.3], [7.7, 3.0, 6.1, 2.3]], dtype=np.float32)


@pytest.fixture(scope="module")
def iris_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    x, y = load_iris(return_X_y=True)
    path = tmp_path_factory.mktemp("replica") / "iris.onnx"
    path.write_bytes(sklearn_to_onnx(LogisticRegression(max_iter=300).fit(x, y)))
    return path


class Learner:
    """A learner stand-in on a loopback port: records every ``/v1/log`` batch, answers feedback."""

    def __init__(self) -> None:
        self.batches: list[list[dict[str, Any]]] = []
        self.feedback: list[dict[str, Any]] = []
        self.url = ""

    @property
    def records(self) -> list[dict[str, Any]]:
        return [record for batch in self.batches for record in batch]

    async def log(self, request: web.Request) -> web.Response:
        records = (await request.json())["records"]
        self.batches.append(records)
        return web.json_response({"accepted": len(records), "ignored": 0, "rejected": []})

    async def label(self, request: web.Request) -> web.Response:
        document = await request.json()
        self.feedback.append(document)
        if document["id"] not in {r["id"] for r in self.records}:
            return web.json_response({"error": "id: unknown response id", "outcome": "unknown"}, status=404)
        return web.json_response({"id": document["id"], "outcome": "joined", "rows": 1})


@contextlib.asynccontextmanager
async def learner_server() -> AsyncIterator[Learner]:
    learner = Learner()
    app = web.Application()
    app.router.add_post("/v1/log", learner.log)
    app.router.add_post("/v2/models/iris/feedback", learner.label)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    learner.url = f"http://127.0.0.1:{port}"
    try:
        yield learner
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def silent_learner() -> AsyncIterator[str]:
    """A learner that takes connections and requests and never answers any."""
    held: list[asyncio.StreamWriter] = []

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)
        with contextlib.suppress(ConnectionError):
            while await reader.read(65536):
                pass

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    finally:
        for writer in held:
            writer.close()
        server.close()


def settings(model_uri: Path, **fields: Any) -> ServerSettings:
    return ServerSettings(model_name="iris", model_uri=str(model_uri), **fields)


@contextlib.asynccontextmanager
async def running(plane: DataPlane) -> AsyncIterator[DataPlane]:
    await plane.start()
    try:
        await until(lambda: plane.state != "loading")
        assert plane.ready, plane.load_error
        yield plane
    finally:
        await plane.stop()


async def until(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.005)


def request(rows: np.ndarray, request_id: str | None = None):
    body: dict[str, Any] = {
        "inputs": [
            {"name": "input", "shape": list(rows.shape), "datatype": "FP32", "data": rows.ravel().tolist()}
        ]
    }
    if request_id is not None:
        body["id"] = request_id
    return decode_request(body, max_elements=10_000, allow_nan=False)


async def infer(plane: DataPlane, rows: np.ndarray, request_id: str | None = None):
    return await plane.infer(plane.model("iris"), request(rows, request_id))


def metrics_text(plane: DataPlane) -> str:
    return generate_latest(plane.metrics.registry).decode()


# ---------------------------------------------------------------- request log


async def test_every_inference_reaches_the_learner_in_batches(iris_onnx):
    async with learner_server() as learner:
        plane = DataPlane(
            settings(
                iris_onnx, learner_url=learner.url, learning_log_batch=16, learning_log_flush_seconds=0.02
            )
        )
        async with running(plane):
            answers = await asyncio.gather(*(infer(plane, ROWS[i % 3 : i % 3 + 1]) for i in range(60)))
            echoed, multi = await infer(plane, ROWS, "client-7")
            await until(lambda: len(learner.records) == 61)
            # the last batch is counted as sent once its answer is back, just after the learner has it
            await until(
                lambda: (
                    metric_value(metrics_text(plane), "mlserving_learning_log_sent_total", model="iris") == 61
                )
            )
            text = metrics_text(plane)
    assert 1 < len(learner.batches) < 61  # merged, and no batch above the limit
    assert max(len(batch) for batch in learner.batches) <= 16
    by_id = {record["id"]: record for record in learner.records}
    assert set(by_id) == {response_id for response_id, _ in answers} | {"client-7"}
    first_id, first = answers[0]
    np.testing.assert_allclose(by_id[first_id]["features"], ROWS[0:1], rtol=1e-6)
    assert by_id[first_id]["prediction"] == first["label"].tolist()
    np.testing.assert_allclose(by_id["client-7"]["features"], ROWS, rtol=1e-6)
    assert echoed == "client-7"
    assert by_id["client-7"]["prediction"] == multi["label"].tolist() and len(multi["label"]) == 3
    assert by_id["client-7"]["snapshot"] is None  # the model of model_uri, no snapshot yet
    assert abs(by_id["client-7"]["time"] - time.time()) < 30
    assert metric_value(text, "mlserving_learning_log_records_total", model="iris") == 61
    assert metric_value(text, "mlserving_learning_log_sent_total", model="iris") == 61
    assert metric_value(text, "mlserving_learning_log_dropped_total", model="iris") == 0


async def test_a_learner_that_never_answers_costs_dropped_records_not_latency(iris_onnx):
    async with silent_learner() as url:
        plane = DataPlane(
            settings(
                iris_onnx,
                learner_url=url,
                learning_log_queue=10,
                learning_log_batch=4,
                learning_log_flush_seconds=0.01,
                learner_timeout_seconds=30.0,
                shutdown_timeout_seconds=0.1,
            )
        )
        async with running(plane):
            slowest = 0.0
            for index in range(200):
                started = time.perf_counter()
                await infer(plane, ROWS[:1], f"r{index}")
                slowest = max(slowest, time.perf_counter() - started)
            assert plane.learner is not None
            counts = plane.learner.counts()
            text = metrics_text(plane)
    # No inference waited for the learner (its timeout is 30 s), and the queue stayed bounded.
    assert slowest < 1.0
    assert counts["sent"] == 0 and counts["records"] == 200
    assert counts["queued"] <= 10
    # Everything not queued nor in the one batch being posted was dropped, and counted.
    assert counts["dropped"] >= 200 - 10 - 4
    assert metric_value(text, "mlserving_learning_log_dropped_total", model="iris") == counts["dropped"]
    assert metric_value(text, "mlserving_learning_log_queued", model="iris") == counts["queued"]


async def test_without_learning_settings_nothing_is_logged_or_exposed(iris_onnx):
    plane = DataPlane(settings(iris_onnx))
    async with running(plane):
        await infer(plane, ROWS[:1])
        text = metrics_text(plane)
    assert plane.learner is None
    assert "mlserving_learning" not in text and "mlserving_snapshot" not in text


# ---------------------------------------------------------------- feedback


async def test_labelled_feedback_is_forwarded_and_the_learners_refusal_is_the_answer(iris_onnx):
    async with learner_server() as learner:
        plane = DataPlane(settings(iris_onnx, learner_url=learner.url, learning_log_flush_seconds=0.01))
        app = InferenceServer(plane)
        await app.startup()
        transport = httpx.ASGITransport(app=app)
        try:
            async with httpx.AsyncClient(transport=transport, base_url="http://server") as client:
                await until(lambda: plane.ready)
                body = {
                    "inputs": [
                        {"name": "input", "shape": [1, 4], "datatype": "FP32", "data": ROWS[0].tolist()}
                    ]
                }
                served = (await client.post("/v2/models/iris/infer", json=body)).json()
                await until(lambda: len(learner.records) == 1)

                right = await client.post("/v2/models/iris/feedback", json={"id": served["id"], "label": 0})
                unknown = await client.post("/v2/models/iris/feedback", json={"id": "forged", "label": 0})
                reward_only = await client.post(
                    "/v2/models/iris/feedback", json={"id": served["id"], "reward": 1}
                )
        finally:
            await app.shutdown()
    assert right.status_code == 200
    assert right.json() == {
        "id": served["id"],
        "accepted": True,
        "reward": 1.0,
        "correct": True,
        "learner": {"id": served["id"], "outcome": "joined", "rows": 1},
    }
    assert (unknown.status_code, unknown.json()["outcome"]) == (404, "unknown")
    assert reward_only.status_code == 200 and "learner" not in reward_only.json()
    assert learner.feedback == [{"id": served["id"], "label": 0}, {"id": "forged", "label": 0}]


async def test_feedback_while_the_learner_is_away_is_503_and_not_counted(iris_onnx):
    from support import free_port

    away = f"http://127.0.0.1:{free_port()}"
    plane = DataPlane(settings(iris_onnx, learner_url=away, shutdown_timeout_seconds=0.1))
    app = InferenceServer(plane)
    await app.startup()
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://s") as client:
            await until(lambda: plane.ready)
            response_id, _ = await infer(plane, ROWS[:1])
            answer = await client.post("/v2/models/iris/feedback", json={"id": response_id, "label": 0})
            text = metrics_text(plane)
    finally:
        await app.shutdown()
    assert answer.status_code == 503 and "unreachable" in answer.json()["error"]
    assert metric_value(text, "mlserving_feedback_total", model="iris") == 0
    assert metric_value(text, "mlserving_learning_feedback_forwarded_total", model="iris", code="0") == 1


# ---------------------------------------------------------------- swaps


class GatedRuntime(ModelRuntime):
    """Predicts ``label`` for every row, after ``gate`` opens; notes when it is unloaded."""

    blocking = True

    def __init__(self, label: int, gate: threading.Event | None = None, inputs: str = "input") -> None:
        super().__init__()
        self.label = label
        self.gate = gate
        self.input_name = inputs
        self.unloaded_at: float | None = None

    def load(self) -> None:
        self._info = RuntimeInfo(
            "fake",
            "classification",
            [TensorSpec(self.input_name, "FP32", (-1, 4))],
            [TensorSpec("label", "INT64", (-1,)), TensorSpec("probabilities", "FP32", (-1, 3))],
            "label",
        )
        self._ready = True

    def predict(self, inputs: Mapping[str, np.ndarray], outputs: Sequence[str] | None = None):
        if self.gate is not None:
            assert self.gate.wait(10)
        rows = next(iter(inputs.values())).shape[0]
        return {
            "label": np.full(rows, self.label, np.int64),
            "probabilities": np.zeros((rows, 3), np.float32),
        }

    def unload(self) -> None:
        self.unloaded_at = time.monotonic()
        super().unload()


def loaded(runtime: GatedRuntime) -> GatedRuntime:
    runtime.load()
    return runtime


async def test_a_swap_serves_new_requests_at_once_and_retires_the_old_model_after_its_requests(iris_onnx):
    gate = threading.Event()
    plane = DataPlane(settings(iris_onnx, max_batch_size=1))
    async with running(plane):
        old = loaded(GatedRuntime(7, gate))
        plane.swap(old, 1)
        held = [asyncio.ensure_future(infer(plane, ROWS[:1])) for _ in range(5)]
        await until(lambda: plane.lookup("iris").usage.active == 5)

        new = loaded(GatedRuntime(8))
        plane.swap(new, 2)
        started = time.perf_counter()
        _, fresh = await infer(plane, ROWS[:1])
        assert time.perf_counter() - started < 0.5  # not behind the held requests
        assert fresh["label"].tolist() == [8] and plane.lookup("iris").snapshot == 2
        await asyncio.sleep(0.1)
        assert old.unloaded_at is None and not any(task.done() for task in held)

        released = time.monotonic()
        gate.set()
        results = await asyncio.gather(*held)
        await until(lambda: old.unloaded_at is not None)
    assert [r["label"].tolist() for _, r in results] == [[7]] * 5  # finished on the model they looked up
    assert old.unloaded_at is not None and old.unloaded_at >= released


async def test_a_snapshot_with_other_inputs_is_refused_and_serving_is_unchanged(iris_onnx):
    plane = DataPlane(settings(iris_onnx))
    async with running(plane):
        served = plane.lookup("iris")
        with pytest.raises(IncompatibleSnapshot, match="inputs"):
            plane.swap(loaded(GatedRuntime(1, inputs="features")), 4)
        assert plane.lookup("iris") is served
        _, results = await infer(plane, ROWS[:1])
    assert results["label"].tolist() == [0]


async def test_responses_name_the_snapshot_that_served_them(iris_onnx):
    plane = DataPlane(settings(iris_onnx))
    app = InferenceServer(plane)
    await app.startup()
    body = {
        "inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": ROWS[0].tolist()}],
        "parameters": {"tenant": "a"},
    }
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://s") as client:
            await until(lambda: plane.ready)
            before = await client.post("/v2/models/iris/infer", json=body)
            plane.swap(loaded(GatedRuntime(2)), 6)
            after = await client.post("/v2/models/iris/infer", json=body)
            v1 = await client.post("/v1/models/iris:predict", json={"instances": [ROWS[0].tolist()]})
    finally:
        await app.shutdown()
    assert "x-mlrollouts-snapshot" not in before.headers
    assert before.json()["parameters"] == {"tenant": "a"}
    assert after.headers["x-mlrollouts-snapshot"] == "6"
    assert after.json()["parameters"] == {"tenant": "a", "snapshot": 6}
    assert orjson.loads(after.content)["outputs"][0]["data"] == [2]
    assert v1.headers["x-mlrollouts-snapshot"] == "6" and v1.json()["predictions"] == [2]


# ---------------------------------------------------------------- hot loader


class ScriptedSource:
    """A snapshot source answering each poll with the next scripted snapshot or error."""

    def __init__(self, *answers: Any) -> None:
        self.answers = list(answers)
        self.current: int | None = None
        self.refused: dict[int, str] = {}
        self.polls: list[int | None] = []

    def poll(self, pinned: int | None = None) -> Any:
        self.polls.append(pinned)
        answer = self.answers.pop(0) if self.answers else None
        if isinstance(answer, Exception):
            raise answer
        return answer

    def serving(self, version: int) -> None:
        self.current = version


class Snapshot:
    def __init__(self, version: int, runtime: GatedRuntime | Exception) -> None:
        self.version = version
        self.runtime = runtime


def open_runtime(snapshot: Snapshot) -> ModelRuntime:
    if isinstance(snapshot.runtime, Exception):
        raise snapshot.runtime
    return loaded(snapshot.runtime)


async def test_the_hot_loader_refuses_bad_snapshots_and_keeps_serving(iris_onnx, caplog):
    bad_inputs = GatedRuntime(3, inputs="features")
    source = ScriptedSource(
        OSError("storage down"),
        OSError("storage down"),
        SnapshotError("snapshot 1: the manifest signature does not match"),
        Snapshot(2, ValueError("not an ONNX file")),
        Snapshot(3, bad_inputs),
        Snapshot(4, GatedRuntime(4)),
    )
    plane = DataPlane(settings(iris_onnx))
    async with running(plane):
        metrics = LearningMetrics(plane.metrics.registry, "iris")
        loader = SnapshotHotLoader(
            source, open_runtime=open_runtime, swap=plane.swap, metrics=metrics, interval=0.01, pinned=9
        )
        served = plane.lookup("iris")
        with caplog.at_level(logging.WARNING, logger="mlserving.server"):
            versions = [await loader.poll_once() for _ in range(5)]
        assert versions == [None] * 5 and plane.lookup("iris") is served
        assert await loader.poll_once() == 4
        assert plane.lookup("iris").snapshot == 4 and source.current == 4
        text = metrics_text(plane)
    assert source.polls == [9] * 6
    assert sorted(source.refused) == [2, 3]
    assert bad_inputs.unloaded_at is not None
    assert sum("storage down" in r.getMessage() for r in caplog.records) == 1  # once, not per poll
    assert metric_value(text, "mlserving_snapshot_poll_errors_total", model="iris") == 2
    assert metric_value(text, "mlserving_snapshot_refused_total", model="iris") == 3
    assert metric_value(text, "mlserving_snapshot_loads_total", model="iris") == 1
    assert metric_value(text, "mlserving_snapshot_version", model="iris") == 4
