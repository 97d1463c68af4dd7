"""Snapshots: publish and load round trip, refusal of tampered or unsigned ones, serving files."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
from learning_testing import KEY, fitted_sgd_classifier, fitted_sgd_regressor

from mlserving.learning.follower import SnapshotFollower, open_snapshot_model
from mlserving.learning.location import StorageLocation
from mlserving.learning.manifest import SnapshotError, SnapshotMissing
from mlserving.learning.snapshots import SnapshotStore, load_snapshot, serving_model

FIELDS = {"model": "iris", "parent": None, "samples": 0, "metrics": {}, "data_version": None}


@pytest.fixture
def store(tmp_path) -> SnapshotStore:
    return SnapshotStore(StorageLocation((tmp_path / "store").as_uri()))


def publish(store: SnapshotStore, version: int, payload: bytes = b"model bytes", **fields) -> dict:
    return store.publish(
        version, {"model.skops": payload, "learner.skops": b"state"}, {**FIELDS, **fields}, KEY
    )


def test_publish_then_load_gives_back_the_same_files(store, tmp_path):
    manifest = publish(store, 0, samples=0)
    publish(store, 1, b"newer model", parent=0, samples=1000, metrics={"accuracy": 0.9}, data_version=4)
    assert store.versions() == [0, 1]
    assert store.latest() == 1
    snapshot = load_snapshot(store.location.uri, 1, KEY, dest_dir=tmp_path / "copy")
    assert (tmp_path / "copy" / "model.skops").read_bytes() == b"newer model"
    assert snapshot.manifest["parent"] == 0
    assert snapshot.manifest["metrics"] == {"accuracy": 0.9}
    assert snapshot.manifest["data_version"] == 4
    assert snapshot.manifest["signature"]["value"] != manifest["signature"]["value"]
    on_disk = json.loads((tmp_path / "store" / "snapshots" / "1" / "manifest.json").read_text())
    assert on_disk == snapshot.manifest


def test_the_manifest_lists_the_sha256_of_every_file(store):
    import hashlib

    manifest = publish(store, 0, b"abc")
    assert manifest["files"] == {
        "model.skops": hashlib.sha256(b"abc").hexdigest(),
        "learner.skops": hashlib.sha256(b"state").hexdigest(),
    }


def test_a_snapshot_is_never_overwritten(store):
    publish(store, 0)
    with pytest.raises(SnapshotError, match="snapshot 0 already exists"):
        publish(store, 0, b"other")


def test_an_incomplete_snapshot_is_not_listed(store, tmp_path):
    publish(store, 0)
    partial = tmp_path / "store" / "snapshots" / "1"
    partial.mkdir()
    (partial / "model.skops").write_bytes(b"half written")
    assert store.versions() == [0]
    with pytest.raises(SnapshotMissing, match="snapshot 1: no manifest"):
        store.load(1, KEY)


def test_a_tampered_file_is_refused(store, tmp_path):
    publish(store, 0)
    (tmp_path / "store" / "snapshots" / "0" / "model.skops").write_bytes(b"evil model")
    with pytest.raises(SnapshotError, match=r"snapshot 0: model.skops has sha256 \w+, the manifest says"):
        store.load(0, KEY)


def test_a_tampered_manifest_is_refused(store, tmp_path):
    publish(store, 0, metrics={"accuracy": 0.5})
    path = tmp_path / "store" / "snapshots" / "0" / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["metrics"]["accuracy"] = 0.99
    path.write_text(json.dumps(manifest))
    with pytest.raises(SnapshotError, match="snapshot 0: the manifest signature does not match"):
        store.load(0, KEY)


def test_an_unsigned_snapshot_is_refused(store, tmp_path):
    publish(store, 0)
    path = tmp_path / "store" / "snapshots" / "0" / "manifest.json"
    manifest = json.loads(path.read_text())
    del manifest["signature"]
    path.write_text(json.dumps(manifest))
    with pytest.raises(SnapshotError, match="snapshot 0: the manifest is unsigned"):
        store.load(0, KEY)


def test_a_missing_file_and_a_wrong_key_are_refused(store, tmp_path):
    publish(store, 0)
    with pytest.raises(SnapshotError, match="signature does not match"):
        store.load(0, b"not-the-signing-key-at-all")
    (tmp_path / "store" / "snapshots" / "0" / "learner.skops").unlink()
    with pytest.raises(SnapshotError, match=r"snapshot 0: learner\.skops is missing"):
        store.load(0, KEY)


def test_the_latest_pointer_never_moves_back(store):
    publish(store, 3)
    publish(store, 2)
    assert store.latest() == 3


# ---------------------------------------------------------------- serving models


def test_a_converting_estimator_is_served_as_onnx_with_the_initial_outputs(store, iris):
    estimator = fitted_sgd_classifier(iris)
    name, data, serving = serving_model(estimator)
    assert (name, serving["format"], serving["task"]) == ("model.onnx", "onnx", "classification")
    store.publish(5, {name: data, "learner.skops": b"s"}, {**FIELDS, "serving": serving}, KEY)
    runtime = open_snapshot_model(store.load(5, KEY))
    outputs = runtime.predict({"input": iris.x.astype(np.float32)})
    np.testing.assert_array_equal(outputs["label"], estimator.predict(iris.x))
    np.testing.assert_allclose(outputs["probabilities"], estimator.predict_proba(iris.x), atol=1e-4)
    assert runtime.info.properties["snapshot"] == "5"


def test_a_regressor_snapshot_serves_a_value_output(store, diabetes):
    estimator = fitted_sgd_regressor(diabetes)
    name, data, serving = serving_model(estimator)
    store.publish(0, {name: data, "learner.skops": b"s"}, {**FIELDS, "serving": serving}, KEY)
    runtime = open_snapshot_model(store.load(0, KEY))
    values = runtime.predict({"input": diabetes.x[:20].astype(np.float32)})["value"]
    np.testing.assert_allclose(values, estimator.predict(diabetes.x[:20]), rtol=1e-4, atol=1e-3)


def test_an_estimator_without_a_working_conversion_is_served_from_skops(store):
    from sklearn.naive_bayes import CategoricalNB

    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 3, size=(60, 4)), rng.integers(0, 2, size=60)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        estimator = CategoricalNB().fit(x, y)
    name, data, serving = serving_model(estimator)
    assert (name, serving["format"]) == ("model.skops", "skops")
    assert serving["reason"]
    store.publish(0, {name: data, "learner.skops": b"s"}, {**FIELDS, "serving": serving}, KEY)
    runtime = open_snapshot_model(store.load(0, KEY))
    np.testing.assert_array_equal(
        runtime.predict({"input": x.astype(np.float64)})["label"], estimator.predict(x)
    )


# ---------------------------------------------------------------- following in a replica


def test_a_follower_loads_each_new_snapshot_once(store, tmp_path, iris):
    name, data, serving = serving_model(fitted_sgd_classifier(iris))
    files = {name: data, "learner.skops": b"s"}
    store.publish(0, files, {**FIELDS, "serving": serving}, KEY)
    follower = SnapshotFollower(store.location.uri, KEY, download_dir=tmp_path / "replica")
    first = follower.poll()
    assert first is not None and first.version == 0
    follower.serving(0)
    assert follower.poll() is None
    store.publish(1, files, {**FIELDS, "serving": serving, "parent": 0}, KEY)
    second = follower.poll()
    assert second is not None and second.version == 1
    follower.serving(1)
    assert sorted(p.name for p in (tmp_path / "replica").iterdir()) == ["1"]
    pinned = follower.poll(pinned=0)
    assert pinned is not None and pinned.version == 0


def test_a_follower_refuses_a_tampered_snapshot_once_and_keeps_serving(store, tmp_path, iris):
    name, data, serving = serving_model(fitted_sgd_classifier(iris))
    store.publish(0, {name: data, "learner.skops": b"s"}, {**FIELDS, "serving": serving}, KEY)
    follower = SnapshotFollower(store.location.uri, KEY, download_dir=tmp_path / "replica")
    follower.serving(follower.poll().version)
    store.publish(1, {name: data, "learner.skops": b"s"}, {**FIELDS, "serving": serving}, KEY)
    (tmp_path / "store" / "snapshots" / "1" / name).write_bytes(data[:-10] + b"0123456789")
    with pytest.raises(SnapshotError, match=r"snapshot 1: model\.onnx has sha256"):
        follower.poll()
    assert follower.poll() is None  # refused once, not fetched again
    assert follower.current == 0
    assert "sha256" in follower.refused[1]
    with pytest.raises(SnapshotMissing):
        follower.poll(pinned=7)
    assert 7 not in follower.refused  # may be published later
