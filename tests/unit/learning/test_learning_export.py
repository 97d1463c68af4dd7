"""Reproducing a snapshot: export it with the exact rows it learned (Delta time travel to its data
version), retrain from the export, get the same model; and the initial model's parameters."""

from __future__ import annotations

import asyncio
import copy
import json
import time

import numpy as np
import pytest
from learning_testing import KEY, fitted_sgd_classifier, logged

from mlserving.learning.cli import lineage_id
from mlserving.learning.export import export_snapshot, read_rows, retrain
from mlserving.learning.learner import LearnerError, set_params
from mlserving.learning.location import StorageLocation
from mlserving.learning.pipeline import LearningPipeline, PipelineConfig
from mlserving.learning.snapshots import SnapshotStore, read_learner_state


async def learn_stream(pipeline: LearningPipeline, x: np.ndarray, y: np.ndarray, first_id: int) -> None:
    ids = [f"r{first_id + i}" for i in range(len(y))]
    pipeline.ingest([logged(i, row, at=time.time(), prediction=0) for i, row in zip(ids, x, strict=True)])
    answers = await asyncio.gather(
        *(pipeline.feedback(i, int(label)) for i, label in zip(ids, y, strict=True))
    )
    assert {a.status for a in answers} == {200}


async def run_learner(tmp_path, iris) -> StorageLocation:
    location = StorageLocation((tmp_path / "store").as_uri())
    config = PipelineConfig(
        model_name="iris", batch_size=16, snapshot_every=48, flush_interval=0.01, unknown_id_wait=0.0
    )
    pipeline = LearningPipeline(
        config, initial_estimator=copy.deepcopy(fitted_sgd_classifier(iris)), location=location, key=KEY
    )
    await pipeline.start()
    try:
        while not pipeline.ready:
            await asyncio.sleep(0.01)
        # several commits, so the snapshot's data version is not the table's last one
        for first in range(30, 150, 20):
            await learn_stream(pipeline, iris.x[first : first + 20], iris.y[first : first + 20], first)
        deadline = time.monotonic() + 20
        while pipeline.snapshot_version != 2 or pipeline.learner.samples != 112:
            assert time.monotonic() < deadline, "timed out"
            await asyncio.sleep(0.01)
    finally:
        await pipeline.stop()
    return location


async def test_an_exported_snapshot_retrains_to_the_same_model_from_its_exact_rows(tmp_path, iris):
    location = await run_learner(tmp_path, iris)
    summary = export_snapshot(location, KEY, 1, tmp_path / "export")
    assert (summary.snapshot, summary.initial_snapshot, summary.rows) == (1, 0, 48)
    assert (summary.seq_start, summary.seq_end) == (0, 48)
    exported = json.loads((tmp_path / "export" / "export.json").read_text())
    assert exported["batch_size"] == 16 and exported["rows"] == 48
    # the table went on growing after snapshot 1: time travel gave exactly what it had learned
    x, labels = read_rows(tmp_path / "export")
    np.testing.assert_array_equal(x, iris.x[30:78])
    assert labels == iris.y[30:78].tolist()
    retrained = retrain(tmp_path / "export")
    learned = read_learner_state(SnapshotStore(location).load(1, KEY))["estimator"]
    np.testing.assert_array_equal(retrained.coef_, learned.coef_)
    np.testing.assert_array_equal(retrained.intercept_, learned.intercept_)
    assert not np.array_equal(retrained.coef_, fitted_sgd_classifier(iris).coef_)


async def test_an_export_refuses_a_snapshot_that_is_not_published_or_a_tampered_export(tmp_path, iris):
    from mlserving.learning.manifest import SnapshotError, SnapshotMissing

    location = await run_learner(tmp_path, iris)
    with pytest.raises(SnapshotMissing):
        export_snapshot(location, KEY, 9, tmp_path / "nine")
    export_snapshot(location, KEY, 2, tmp_path / "export")
    state = tmp_path / "export" / "initial" / "learner.skops"
    state.write_bytes(state.read_bytes() + b"\0")
    with pytest.raises(SnapshotError, match="sha256"):
        retrain(tmp_path / "export")


def test_parameters_are_set_on_the_initial_model_and_bad_ones_named(iris):
    model = fitted_sgd_classifier(iris)
    set_params(model, {"learning_rate": "constant", "eta0": 0.05})
    assert (model.learning_rate, model.eta0) == ("constant", 0.05)
    with pytest.raises(LearnerError, match=r"^params\.momentum: SGDClassifier has no such parameter"):
        set_params(model, {"momentum": 0.9})
    with pytest.raises(LearnerError, match=r"^params: .*learning_rate"):
        set_params(fitted_sgd_classifier(iris), {"learning_rate": "fast"})


def test_a_change_of_parameters_starts_a_new_lineage():
    assert lineage_id("abc", {}) == "abc"
    assert lineage_id("abc", {"eta0": 0.1}) != lineage_id("abc", {"eta0": 0.2})
    assert lineage_id("abc", {"a": 1, "b": 2}) == lineage_id("abc", {"b": 2, "a": 1})
