"""Pinning what replicas serve: the ``serving`` pointer in the store, ``POST /v1/pin`` on the learner,
the status that reports it, and a follower that obeys a pin without a restart."""

from __future__ import annotations

import asyncio
import copy
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from learning_testing import KEY, fitted_sgd_classifier

from mlserving.learning.follower import SnapshotFollower
from mlserving.learning.location import StorageLocation
from mlserving.learning.manifest import SnapshotMissing
from mlserving.learning.pipeline import LearningPipeline, PipelineConfig
from mlserving.learning.service import create_app
from mlserving.learning.snapshots import SnapshotStore, serving_model

FIELDS = {"model": "iris", "parent": None, "samples": 0, "metrics": {}, "data_version": None}


@pytest.fixture
def store(tmp_path) -> SnapshotStore:
    return SnapshotStore(StorageLocation((tmp_path / "store").as_uri()))


def publish(store: SnapshotStore, version: int, iris) -> None:
    name, data, serving = serving_model(fitted_sgd_classifier(iris))
    store.publish(version, {name: data, "learner.skops": b"state"}, {**FIELDS, "serving": serving}, KEY)


def test_serving_follows_latest_until_pinned_and_again_once_unpinned(store, iris):
    publish(store, 0, iris)
    assert (store.latest(), store.serving(), store.pinned()) == (0, 0, None)
    publish(store, 1, iris)
    assert store.serving() == 1
    assert store.pin(0) == 0
    publish(store, 2, iris)
    assert (store.latest(), store.serving(), store.pinned()) == (2, 0, 0)
    assert store.pin(None) == 2
    assert (store.serving(), store.pinned()) == (2, None)


def test_a_pin_to_an_unpublished_snapshot_is_refused_and_changes_nothing(store, iris):
    publish(store, 0, iris)
    with pytest.raises(SnapshotMissing, match="snapshot 5"):
        store.pin(5)
    assert (store.serving(), store.pinned()) == (0, None)


def test_a_store_without_a_serving_pointer_serves_latest(store, tmp_path, iris):
    publish(store, 0, iris)
    (tmp_path / "store" / "snapshots" / "serving").unlink()
    assert store.serving() == 0
    assert store.sync_serving() == 0
    assert (tmp_path / "store" / "snapshots" / "serving").read_text() == "0\n"


def test_a_follower_obeys_a_pin_without_a_restart(store, tmp_path, iris):
    publish(store, 0, iris)
    publish(store, 1, iris)
    follower = SnapshotFollower(store.location.uri, KEY, download_dir=tmp_path / "replica")
    follower.serving(follower.poll().version)
    assert follower.current == 1
    store.pin(0)
    pinned = follower.poll()
    assert pinned is not None and pinned.version == 0
    follower.serving(0)
    publish(store, 2, iris)
    assert follower.poll() is None  # still pinned: the new snapshot is not served
    store.pin(None)
    newest = follower.poll()
    assert newest is not None and newest.version == 2


# ---------------------------------------------------------------- through the learner


def make_pipeline(storage: Path, iris) -> LearningPipeline:
    config = PipelineConfig(
        model_name="iris", batch_size=8, snapshot_every=16, flush_interval=0.01, unknown_id_wait=0.0
    )
    return LearningPipeline(
        config,
        initial_estimator=copy.deepcopy(fitted_sgd_classifier(iris)),
        location=StorageLocation(storage.as_uri()),
        key=KEY,
    )


@pytest.fixture
async def learner(tmp_path, iris) -> AsyncIterator[tuple[httpx.AsyncClient, LearningPipeline]]:
    async with running(make_pipeline(tmp_path / "store", iris)) as started:
        yield started


class running:
    """The learner's app over an in-process transport, its pipeline run as the app's lifespan does."""

    def __init__(self, pipeline: LearningPipeline) -> None:
        self.pipeline = pipeline

    async def __aenter__(self) -> tuple[httpx.AsyncClient, LearningPipeline]:
        await self.pipeline.start()
        transport = httpx.ASGITransport(app=create_app(self.pipeline))
        self.client = httpx.AsyncClient(transport=transport, base_url="http://learner")
        await until(lambda: self.pipeline.ready)
        return self.client, self.pipeline

    async def __aexit__(self, *_: object) -> None:
        await self.client.aclose()
        await self.pipeline.stop()


async def until(predicate, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def learn(client: httpx.AsyncClient, iris, first: int, count: int) -> None:
    records = [
        {"id": f"r{i}", "features": iris.x[i].tolist(), "prediction": 0, "snapshot": 0, "time": time.time()}
        for i in range(first, first + count)
    ]
    assert (await client.post("/v1/log", json={"records": records})).status_code == 200
    answer = await client.post(
        "/v1/feedback",
        json={"feedback": [{"id": f"r{i}", "label": int(iris.y[i])} for i in range(first, first + count)]},
    )
    assert all(r["status"] == 200 for r in answer.json()["results"]), answer.text


async def test_status_lists_snapshots_with_lineage_metrics_and_data_versions(learner, iris):
    client, pipeline = learner
    await learn(client, iris, 0, 32)
    await until(lambda: pipeline.snapshot_version == 2)
    status = (await client.get("/v1/status")).json()
    assert (status["latest"], status["serving"], status["pinned"]) == (2, 2, None)
    assert status["samples"] == 32 and set(status["metrics"]) == {"accuracy", "logLoss"}
    listed = status["snapshots"]
    assert [s["version"] for s in listed] == [0, 1, 2]
    assert [s["parent"] for s in listed] == [None, 0, 1]
    assert [s["samples"] for s in listed] == [0, 16, 32]
    assert listed[2]["data_seq_end"] == 32 and listed[2]["data_version"] is not None
    assert set(listed[2]["metrics"]) == {"accuracy", "logLoss"}
    assert listed[2]["created"].endswith("Z")


async def test_a_pin_holds_serving_while_learning_goes_on_and_survives_a_restart(tmp_path, iris):
    async with running(make_pipeline(tmp_path / "store", iris)) as (client, pipeline):
        await learn(client, iris, 0, 16)
        await until(lambda: pipeline.snapshot_version == 1)
        answer = await client.post("/v1/pin", json={"snapshot": 0})
        assert answer.status_code == 200, answer.text
        assert answer.json() == {"pinned": 0, "serving": 0, "latest": 1}
        await learn(client, iris, 16, 16)
        await until(lambda: pipeline.snapshot_version == 2)
        status = (await client.get("/v1/status")).json()
        assert (status["latest"], status["serving"], status["pinned"]) == (2, 0, 0)
    store = SnapshotStore(StorageLocation((tmp_path / "store").as_uri()))
    assert (store.serving(), store.pinned()) == (0, 0)
    async with running(make_pipeline(tmp_path / "store", iris)) as (client, _):
        status = (await client.get("/v1/status")).json()
        assert (status["latest"], status["serving"], status["pinned"]) == (2, 0, 0)
        answer = await client.post("/v1/pin", json={"snapshot": None})
        assert answer.json() == {"pinned": None, "serving": 2, "latest": 2}
    assert (store.serving(), store.pinned()) == (2, None)


async def test_bad_pins_are_refused_naming_the_field(learner, tmp_path):
    client, _ = learner
    for body in ({}, {"snapshot": -1}, {"snapshot": "1"}, {"snapshot": True}, [1]):
        answer = await client.post("/v1/pin", json=body)
        assert answer.status_code == 400, body
        assert answer.json()["error"].startswith("snapshot:")
    unknown = await client.post("/v1/pin", json={"snapshot": 9})
    assert unknown.status_code == 404
    assert unknown.json()["error"].startswith("snapshot: 9 is not a published snapshot")
    manifest = tmp_path / "store" / "snapshots" / "0" / "manifest.json"
    manifest.write_text(manifest.read_text().replace('"samples": 0', '"samples": 5'))
    tampered = await client.post("/v1/pin", json={"snapshot": 0})
    assert tampered.status_code == 409
    assert "signature does not match" in tampered.json()["error"]
    assert (await client.get("/v1/status")).json()["pinned"] is None
