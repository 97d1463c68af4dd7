"""Snapshot retention: the newest ``keep`` snapshots stay, and so do the pinned, served and candidate
snapshots and the first snapshot of each kept lineage (an export retrains from it); the data log is
never touched."""

from __future__ import annotations

import copy

import pytest
from learning_testing import KEY, fitted_sgd_classifier
from test_learning_pin import learn, running, until

from mlserving.learning.export import lineage_root
from mlserving.learning.location import StorageLocation
from mlserving.learning.pipeline import LearningPipeline, PipelineConfig
from mlserving.learning.snapshots import SnapshotStore


@pytest.fixture
def store(tmp_path) -> SnapshotStore:
    return SnapshotStore(StorageLocation((tmp_path / "store").as_uri()))


def publish(store: SnapshotStore, version: int, root: int, parent: int | None, base: str = "a") -> None:
    fields = {
        "model": "iris",
        "parent": parent,
        "samples": version * 10,
        "metrics": {},
        "data_version": None,
        "base_sha256": base,
        "lineage_root": root,
        "data_seq_start": root * 10,
        "data_seq_end": version * 10,
    }
    store.publish(version, {"model.skops": b"m", "learner.skops": b"s"}, fields, KEY)


def test_prune_keeps_the_newest_the_protected_and_the_lineage_roots(store, tmp_path):
    for version in range(4):
        publish(store, version, root=0, parent=version - 1 if version else None)
    publish(store, 4, root=4, parent=3, base="b")  # a new initial model: a new lineage
    publish(store, 5, root=4, parent=4, base="b")
    store.pin(1)
    deleted = store.prune(2, {1}, KEY)
    assert deleted == [2, 3]
    assert store.versions() == [0, 1, 4, 5]
    assert not (tmp_path / "store" / "snapshots" / "2").exists()
    assert store.prune(2, {1}, KEY) == []  # nothing more to delete


def test_an_export_finds_its_lineage_root_after_the_snapshots_between_were_deleted(store):
    for version in range(4):
        publish(store, version, root=0, parent=version - 1 if version else None)
    assert store.prune(1, set(), KEY) == [1, 2]
    root = lineage_root(store, KEY, store.read_manifest(3, KEY))
    assert root["version"] == 0


def test_prune_refuses_to_keep_nothing(store):
    with pytest.raises(ValueError, match="keep"):
        store.prune(0, set(), KEY)


async def test_the_learner_keeps_the_newest_snapshots_and_its_lineage_root(tmp_path, iris):
    config = PipelineConfig(
        model_name="iris",
        batch_size=8,
        snapshot_every=8,
        flush_interval=0.01,
        unknown_id_wait=0.0,
        keep_snapshots=2,
    )
    pipeline = LearningPipeline(
        config,
        initial_estimator=copy.deepcopy(fitted_sgd_classifier(iris)),
        location=StorageLocation((tmp_path / "store").as_uri()),
        key=KEY,
    )
    async with running(pipeline) as (client, _):
        await learn(client, iris, 0, 48)
        await until(lambda: (pipeline.snapshot_version or 0) >= 6)
        await until(lambda: len(pipeline.store.versions()) <= 3)
        versions = pipeline.store.versions()
        assert versions[0] == 0 and versions[-1] == pipeline.snapshot_version
        assert len(versions) == 3, versions
        rows = pipeline.datalog.read_rows(seq_start=0)
        assert len(rows) == 48  # the data log keeps every row
