"""A serving replica's log shipper against the learner's app, and against no learner at all."""

from __future__ import annotations

import asyncio
import copy
import time

import httpx
import numpy as np
from learning_testing import KEY, fitted_sgd_classifier

from mlserving.learning.location import StorageLocation
from mlserving.learning.pipeline import LearningPipeline, PipelineConfig
from mlserving.learning.service import create_app
from mlserving.learning.shipper import LogShipper
from support import free_port


async def until(predicate, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


def learner(tmp_path, iris) -> LearningPipeline:
    config = PipelineConfig(model_name="iris", flush_interval=0.01, unknown_id_wait=0.0)
    return LearningPipeline(
        config,
        initial_estimator=copy.deepcopy(fitted_sgd_classifier(iris)),
        location=StorageLocation((tmp_path / "store").as_uri()),
        key=KEY,
    )


async def test_logged_requests_reach_the_learner_in_batches(tmp_path, iris):
    pipeline = learner(tmp_path, iris)
    await pipeline.start()
    transport = httpx.ASGITransport(app=create_app(pipeline))
    client = httpx.AsyncClient(transport=transport, base_url="http://learner")
    shipper = LogShipper("http://learner", max_batch=16, flush_interval=0.01, client=client)
    try:
        await until(lambda: pipeline.ready)
        await shipper.start()
        for index in range(40):
            features = iris.x[index : index + 1].astype(np.float32)  # as a server holds them
            shipper.log(f"r{index}", features, np.array([1]), snapshot=0)
        shipper.log("batch", iris.x[:3], np.array(["a", "b", "c"], dtype=object), snapshot=2)
        await until(lambda: shipper.sent == 41)
        assert len(pipeline.buffer) == 41
        answer = await pipeline.feedback("r7", int(iris.y[7]))
        assert answer.status == 200
        labels = [int(v) for v in iris.y[:3]]
        assert (await pipeline.feedback("batch", labels)).rows == 3
        assert (shipper.dropped, shipper.refused, shipper.failures) == (0, 0, 0)
    finally:
        await shipper.close()
        await client.aclose()
        await pipeline.stop()
    rows = pipeline.datalog.read_rows()
    assert rows.request_id == ["r7", "batch", "batch", "batch"]
    assert rows.snapshot == [0, 2, 2, 2]
    np.testing.assert_allclose(rows.features[0], iris.x[7].astype(np.float32))


async def test_while_no_learner_answers_the_queue_stays_bounded():
    shipper = LogShipper(
        f"http://127.0.0.1:{free_port()}", max_batch=4, flush_interval=0.01, max_queue=5, retry_max=0.05
    )
    await shipper.start()
    try:
        for index in range(8):
            shipper.log(f"r{index}", [1.0, 2.0], 0, snapshot=0)
        await until(lambda: shipper.failures >= 2)
        assert shipper.queued <= 5
        assert shipper.dropped >= 3
        assert shipper.sent == 0
    finally:
        await shipper.close(drain_timeout=0.1)


async def test_a_batch_the_learner_refuses_is_dropped_not_retried(tmp_path, iris):
    pipeline = learner(tmp_path, iris)
    await pipeline.start()
    transport = httpx.ASGITransport(app=create_app(pipeline, max_body_bytes=200))
    client = httpx.AsyncClient(transport=transport, base_url="http://learner")
    shipper = LogShipper("http://learner", max_batch=10, flush_interval=0.01, client=client)
    try:
        await until(lambda: pipeline.ready)
        await shipper.start()
        for index in range(10):
            shipper.log(f"r{index}", iris.x[index], 0, snapshot=0)
        await until(lambda: shipper.refused == 10)
        assert shipper.queued == 0
        assert shipper.failures == 0
    finally:
        await shipper.close()
        await client.aclose()
        await pipeline.stop()
