"""The learner as a real process over HTTP: logs and feedback in, snapshots and metrics out; kill -9."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from learner_process import KEY, learner_process, send_feedback, send_logs

from mlserving.learning.datalog import DataLog
from mlserving.learning.follower import SnapshotFollower, open_snapshot_model
from mlserving.learning.location import StorageLocation
from mlserving.learning.shipper import LogShipper
from support import wait_until

pytestmark = pytest.mark.integration

FLAGS = ["--batch-size", "16", "--snapshot-every", "128", "--window", "100"]


def test_learns_from_feedback_and_publishes_signed_snapshots(tmp_path, cancer):
    model, x, y = cancer
    storage = (tmp_path / "store").as_uri()
    with learner_process(tmp_path, model, storage, extra=FLAGS) as learner:
        assert learner.metric("mllearner_snapshot_version", model="cancer") == 0
        assert learner.metric("mllearner_samples_total", model="cancer") == 0

        async def ship() -> None:
            shipper = LogShipper(learner.url, max_batch=64, flush_interval=0.01)
            await shipper.start()
            for index, row in enumerate(x[:300]):
                shipper.log(f"req-{index}", row.reshape(1, -1), np.array([0]), snapshot=0)
            while shipper.sent < 300:
                await asyncio.sleep(0.01)
            await shipper.close()

        asyncio.run(ship())
        assert send_feedback(learner, y[:300], first=0) == [200] * 300
        wait_until(
            lambda: learner.metric("mllearner_samples_total", model="cancer") == 288,
            message="288 samples learned (18 batches of 16)",
        )
        wait_until(
            lambda: learner.metric("mllearner_snapshot_version", model="cancer") == 2, message="snapshot 2"
        )
        accuracy = learner.metric("mllearner_prequential", model="cancer", metric="accuracy")
        assert accuracy is not None and accuracy > 0.8
        assert learner.metric("mllearner_prequential", model="cancer", metric="logLoss") > 0
        assert learner.metric("mllearner_feedback_total", model="cancer", outcome="joined") == 300
        assert send_feedback(learner, y[:1], first=0) == [409]
        assert send_feedback(learner, y[:1], first=10_000) == [404]
        assert learner.metric("mllearner_feedback_total", model="cancer", outcome="unknown") == 1

    follower = SnapshotFollower(storage, KEY, download_dir=tmp_path / "replica")
    snapshot = follower.poll()
    assert snapshot is not None and snapshot.version == 2
    assert snapshot.manifest["parent"] == 1
    assert snapshot.manifest["samples"] == 256
    runtime = open_snapshot_model(snapshot)
    predicted = runtime.predict({"input": x[300:].astype(np.float32)})["label"]
    assert np.mean(predicted == y[300:]) > 0.85


def test_kill_9_loses_no_acknowledged_row_and_learning_resumes(tmp_path, cancer):
    model, x, y = cancer
    storage = (tmp_path / "store").as_uri()
    with learner_process(tmp_path, model, storage, extra=FLAGS) as learner:
        send_logs(learner, x[:200], first=0)
        statuses = send_feedback(learner, y[:200], first=0)
        assert statuses == [200] * 200
        wait_until(
            lambda: learner.metric("mllearner_snapshot_version", model="cancer") == 1, message="snapshot 1"
        )
        learner.proc.kill()
    acknowledged = {f"req-{i}" for i, status in enumerate(statuses) if status == 200}
    datalog = DataLog(StorageLocation(storage), n_features=x.shape[1], label_kind="int")
    assert set(datalog.read_rows().request_id) == acknowledged

    with learner_process(tmp_path, model, storage, extra=FLAGS) as restarted:
        status = restarted.status()
        assert status["snapshot_version"] == 1
        assert status["samples"] == 192  # 128 from snapshot 1, 64 replayed from the log
        assert status["pending_samples"] == 8
        send_logs(restarted, x[200:300], first=200)
        assert send_feedback(restarted, y[200:300], first=200) == [200] * 100
        wait_until(
            lambda: restarted.metric("mllearner_snapshot_version", model="cancer") == 2, message="snapshot 2"
        )
        assert restarted.status()["samples"] == 288
    rows = datalog.read_rows()
    assert rows.seq.tolist() == list(range(300))
    assert len(set(rows.request_id)) == 300
