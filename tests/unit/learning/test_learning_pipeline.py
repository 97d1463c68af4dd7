"""The learner's background work in-process: join → data log → learn → snapshot; resume; retries."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import warnings
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest
from learning_testing import KEY, fitted_sgd_classifier, fitted_sgd_regressor, logged

from mlserving.learning.datalog import DataLog
from mlserving.learning.location import StorageLocation
from mlserving.learning.pipeline import LearningPipeline, PipelineConfig
from mlserving.learning.snapshots import SnapshotStore, read_learner_state

FAST = {
    "flush_interval": 0.01,
    "retry_initial": 0.01,
    "retry_max": 0.05,
    "unknown_id_wait": 0.0,
    "drain_timeout": 0.5,
}


def make_pipeline(storage: Path, estimator, **config) -> LearningPipeline:
    options = {
        "model_name": "iris",
        "batch_size": 16,
        "snapshot_every": 64,
        "base_sha256": "base-a",
        **FAST,
        **config,
    }
    return LearningPipeline(
        PipelineConfig(**options),
        initial_estimator=copy.deepcopy(estimator),
        location=StorageLocation(storage.as_uri()),
        key=KEY,
    )


async def eventually(predicate, timeout: float = 20.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("timed out waiting for the learner")
        await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def running(pipeline: LearningPipeline) -> AsyncIterator[LearningPipeline]:
    await pipeline.start()
    try:
        await eventually(lambda: pipeline.ready)
        yield pipeline
    finally:
        await pipeline.stop()


async def send(pipeline: LearningPipeline, x: np.ndarray, y: np.ndarray, first_id: int = 0) -> list[int]:
    ids = [f"r{first_id + i}" for i in range(len(y))]
    pipeline.ingest(
        [logged(i, row, at=pipeline.clock(), prediction=0) for i, row in zip(ids, x, strict=True)]
    )
    answers = await asyncio.gather(*(pipeline.feedback(i, y_i.item()) for i, y_i in zip(ids, y, strict=True)))
    return [a.status for a in answers]


def retrain(initial, x: np.ndarray, y: np.ndarray, batch_size: int):
    model = copy.deepcopy(initial)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for start in range(0, len(y) - len(y) % batch_size, batch_size):
            model.partial_fit(
                x[start : start + batch_size], y[start : start + batch_size], classes=model.classes_
            )
    return model


async def test_rows_are_learned_and_each_snapshot_reproduces_from_its_rows(tmp_path, iris):
    initial = fitted_sgd_classifier(iris)
    async with running(make_pipeline(tmp_path / "store", initial)) as pipeline:
        assert pipeline.snapshot_version == 0  # the initial model, signed
        statuses = await send(pipeline, iris.x[30:], iris.y[30:])
        assert statuses == [200] * 120
        await eventually(lambda: pipeline.learner.samples == 112 and pipeline.snapshot_version == 1)
        assert set(pipeline.learner.metrics) == {"accuracy", "logLoss"}

    store = SnapshotStore(StorageLocation((tmp_path / "store").as_uri()))
    snapshot = store.load(1, KEY)
    manifest = snapshot.manifest
    assert (manifest["parent"], manifest["samples"], manifest["data_seq_start"]) == (0, 64, 0)
    assert manifest["data_seq_end"] == 64
    assert manifest["serving"]["format"] == "onnx"
    assert manifest["metrics"]["accuracy"] == pytest.approx(manifest["metrics"]["accuracy"])
    datalog = DataLog(store.location, n_features=4, label_kind="int")
    rows = datalog.read_rows(up_to_version=manifest["data_version"], seq_end=manifest["data_seq_end"])
    assert len(rows) == 64
    reproduced = retrain(initial, rows.features, np.asarray(rows.label), 16)
    np.testing.assert_array_equal(read_learner_state(snapshot)["estimator"].coef_, reproduced.coef_)


async def test_a_restart_resumes_from_the_snapshot_and_replays_the_log(tmp_path, iris):
    initial = fitted_sgd_classifier(iris)
    async with running(make_pipeline(tmp_path / "store", initial)) as first:
        await send(first, iris.x[30:130], iris.y[30:130])
        await eventually(lambda: first.learner.samples == 96 and first.snapshot_version == 1)
        learned_before = first.learner.estimator.coef_.copy()
    # Snapshot 1 holds 64 samples; the 32 after it and the 4 pending are only in the data log.
    async with running(make_pipeline(tmp_path / "store", initial)) as second:
        assert second.learner.samples == 96
        np.testing.assert_array_equal(second.learner.estimator.coef_, learned_before)
        assert second.learner.pending == 4
        await send(second, iris.x[130:], iris.y[130:], first_id=1000)
        await eventually(lambda: second.learner.samples == 112)
        assert second.snapshot_version == 1  # the next is due at 128 samples
    uninterrupted = retrain(initial, iris.x[30:], iris.y[30:], 16)
    np.testing.assert_array_equal(second.learner.estimator.coef_, uninterrupted.coef_)


async def test_a_tampered_snapshot_is_skipped_on_resume(tmp_path, iris):
    initial = fitted_sgd_classifier(iris)
    async with running(make_pipeline(tmp_path / "store", initial)) as first:
        await send(first, iris.x[30:130], iris.y[30:130])
        await eventually(lambda: first.snapshot_version == 1 and first.learner.samples == 96)
    manifest_path = tmp_path / "store" / "snapshots" / "1" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["samples"] = 1
    manifest_path.write_text(json.dumps(manifest))
    async with running(make_pipeline(tmp_path / "store", initial)) as second:
        # resumed from snapshot 0; replaying the log may already have published snapshot 2 on top of it
        if second.snapshot_version != 0:
            store = SnapshotStore(StorageLocation((tmp_path / "store").as_uri()))
            assert store.read_manifest(second.snapshot_version, KEY)["parent"] == 0
        assert "snapshot 1: the manifest signature does not match" in second.refused_snapshots[0]
        assert second.learner.samples == 96  # everything replayed from the log
        np.testing.assert_array_equal(second.learner.estimator.coef_, first.learner.estimator.coef_)


async def test_another_initial_model_starts_a_new_lineage(tmp_path, iris):
    initial = fitted_sgd_classifier(iris)
    async with running(make_pipeline(tmp_path / "store", initial)) as first:
        await send(first, iris.x[30:100], iris.y[30:100])
        await eventually(lambda: first.learner.samples == 64)
    other = fitted_sgd_classifier(iris, rows=60)
    async with running(make_pipeline(tmp_path / "store", other, base_sha256="base-b")) as second:
        assert second.learner.samples == 0
        assert second.learner.learned_seq == 70
        np.testing.assert_array_equal(second.learner.estimator.coef_, other.coef_)
    manifest = SnapshotStore(StorageLocation((tmp_path / "store").as_uri())).read_manifest(
        second.snapshot_version, KEY
    )
    assert (manifest["parent"], manifest["data_seq_start"], manifest["base_sha256"]) == (None, 70, "base-b")


async def test_feedback_outcomes_and_their_status_codes(tmp_path, iris):
    now = [1000.0]
    pipeline = make_pipeline(tmp_path / "store", fitted_sgd_classifier(iris), max_delay=60)
    pipeline.clock = lambda: now[0]
    async with running(pipeline):
        pipeline.ingest([logged("a", iris.x[0], at=now[0]), logged("b", iris.x[1], at=now[0])])
        unknown = await pipeline.feedback("nope", 1)
        assert (unknown.status, unknown.outcome) == (404, "unknown")
        invalid = await pipeline.feedback("a", "virginica")
        assert (invalid.status, invalid.outcome) == (400, "invalid")
        assert invalid.error.startswith("label: 'virginica' is not one of the model's classes")
        joined = await pipeline.feedback("a", 2)
        assert (joined.status, joined.rows) == (200, 1)
        assert joined.data_version == 0
        duplicate = await pipeline.feedback("a", 2)
        assert (duplicate.status, duplicate.outcome) == (409, "duplicate")
        now[0] += 61
        late = await pipeline.feedback("b", 1)
        assert (late.status, late.outcome) == (410, "late")
        assert pipeline.buffer.stats.feedback_outcomes() == {
            "joined": 1,
            "late": 1,
            "unknown": 1,
            "duplicate": 1,
            "invalid": 1,
        }


async def test_feedback_may_overtake_its_logged_request(tmp_path, iris):
    pipeline = make_pipeline(tmp_path / "store", fitted_sgd_classifier(iris), unknown_id_wait=5.0)
    async with running(pipeline):
        pending = asyncio.create_task(pipeline.feedback("early", 1))
        await asyncio.sleep(0.05)
        assert not pending.done()
        pipeline.ingest([logged("early", iris.x[0], at=pipeline.clock())])
        answer = await pending
        assert (answer.status, answer.outcome) == (200, "joined")


class FlakyDataLog(DataLog):
    """A data log whose storage fails the first ``failures`` appends."""

    def __init__(self, *args, failures: int, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.failures = failures

    def append(self, joined):
        if self.failures > 0:
            self.failures -= 1
            raise OSError("storage unreachable")
        return super().append(joined)


def with_flaky_log(storage: Path, estimator, failures: int, **config) -> LearningPipeline:
    pipeline = make_pipeline(storage, estimator, **config)
    pipeline.datalog = FlakyDataLog(pipeline.location, n_features=4, label_kind="int", failures=failures)
    return pipeline


async def test_failed_appends_are_retried_before_feedback_is_acknowledged(tmp_path, iris):
    pipeline = with_flaky_log(tmp_path / "store", fitted_sgd_classifier(iris), failures=3)
    async with running(pipeline):
        statuses = await send(pipeline, iris.x[:20], iris.y[:20])
        assert statuses == [200] * 20
        assert pipeline.storage.errors == {"append": 3}
        assert pipeline.storage.available
        assert "storage unreachable" in pipeline.storage.last_error
    assert len(pipeline.datalog.read_rows()) == 20


async def test_a_row_not_yet_written_is_not_acknowledged_but_written_later(tmp_path, iris):
    pipeline = with_flaky_log(
        tmp_path / "store", fitted_sgd_classifier(iris), failures=4, ack_timeout=0.05, retry_initial=0.05
    )
    async with running(pipeline):
        pipeline.ingest([logged("a", iris.x[0], at=pipeline.clock())])
        answer = await pipeline.feedback("a", int(iris.y[0]))
        assert answer.status == 503
        assert "queued but not yet written" in answer.error
        assert not pipeline.storage.available
        await eventually(lambda: pipeline.unwritten_rows == 0)
        assert (await pipeline.feedback("a", int(iris.y[0]))).status == 409
    assert pipeline.datalog.read_rows().request_id == ["a"]


async def test_feedback_waits_for_nothing_when_too_many_rows_are_unwritten(tmp_path, iris):
    pipeline = with_flaky_log(
        tmp_path / "store", fitted_sgd_classifier(iris), failures=1000, ack_timeout=0.05, max_unwritten_rows=2
    )
    async with running(pipeline):
        pipeline.ingest([logged(f"r{i}", iris.x[i], at=pipeline.clock()) for i in range(3)])
        assert [(await pipeline.feedback(f"r{i}", 0)).status for i in range(2)] == [503, 503]
        refused = await pipeline.feedback("r2", 0)
        assert refused.status == 503
        assert refused.error.startswith("storage: 2 rows wait to be written")
        assert pipeline.buffer.stats.joined == 2  # the third was not taken from the buffer


async def test_a_regressor_learns_through_the_log(tmp_path, diabetes):
    initial = fitted_sgd_regressor(diabetes)
    async with running(make_pipeline(tmp_path / "store", initial, model_name="diabetes")) as pipeline:
        ids = [f"d{i}" for i in range(100)]
        pipeline.ingest([logged(i, diabetes.x[50 + n], at=pipeline.clock()) for n, i in enumerate(ids)])
        answers = await asyncio.gather(
            *(pipeline.feedback(i, float(diabetes.y[50 + n])) for n, i in enumerate(ids))
        )
        assert {a.status for a in answers} == {200}
        await eventually(lambda: pipeline.learner.samples == 96 and pipeline.snapshot_version == 1)
        assert set(pipeline.learner.metrics) == {"mae", "rmse"}
    assert pipeline.datalog.read_rows().label[:2] == [float(diabetes.y[50]), float(diabetes.y[51])]


async def test_stopping_writes_the_rows_still_queued(tmp_path, iris):
    pipeline = make_pipeline(tmp_path / "store", fitted_sgd_classifier(iris), flush_interval=30.0)
    await pipeline.start()
    await eventually(lambda: pipeline.ready)
    pipeline.ingest([logged(f"r{i}", iris.x[i], at=pipeline.clock()) for i in range(3)])
    first = await pipeline.feedback("r0", 0)  # after idle: written at once
    assert first.status == 200
    queued = [asyncio.create_task(pipeline.feedback(f"r{i}", 1)) for i in (1, 2)]
    await asyncio.sleep(0.1)
    assert not any(task.done() for task in queued)  # the next commit is 30 s away
    await pipeline.stop()
    assert [(await task).status for task in queued] == [200, 200]
    assert pipeline.datalog.read_rows().request_id == ["r0", "r1", "r2"]
