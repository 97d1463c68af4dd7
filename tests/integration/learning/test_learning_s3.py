"""The learner on s3:// storage (a real moto server process): data log and snapshots in a bucket."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from learner_process import KEY, learner_process, send_feedback, send_logs

from mlserving.learning.datalog import DataLog
from mlserving.learning.location import StorageLocation
from mlserving.learning.snapshots import SnapshotStore, load_snapshot
from support import PYTHON, free_port, running, wait_until

pytestmark = pytest.mark.integration

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1"}


@pytest.fixture(scope="module")
def s3_endpoint(tmp_path_factory):
    moto = shutil.which("moto_server") or str(Path(PYTHON).with_name("moto_server"))
    port = free_port()
    log_dir = tmp_path_factory.mktemp("moto")
    with running(
        [moto, "-H", "127.0.0.1", "-p", str(port)],
        log_dir / "moto.log",
        ready_url=f"http://127.0.0.1:{port}/moto-api/",
    ):
        endpoint = f"http://127.0.0.1:{port}"
        import boto3

        boto3.client(
            "s3",
            endpoint_url=endpoint,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        ).create_bucket(Bucket="learning")
        yield endpoint


def test_the_learner_writes_its_log_and_snapshots_to_s3(tmp_path, cancer, s3_endpoint):
    model, x, y = cancer
    storage = "s3://learning/cancer"
    flags = ["--batch-size", "16", "--snapshot-every", "64", "--s3-endpoint-url", s3_endpoint]
    # The credentials come from the environment, as from a pod's Secret.
    with learner_process(tmp_path, model, storage, extra=flags, env=CREDENTIALS) as learner:
        send_logs(learner, x[:100], first=0)
        assert send_feedback(learner, y[:100], first=0) == [200] * 100
        wait_until(
            lambda: learner.metric("mllearner_snapshot_version", model="cancer") == 1, message="snapshot 1"
        )

    options = {**CREDENTIALS, "AWS_ENDPOINT_URL": s3_endpoint}
    location = StorageLocation(storage, options)
    assert SnapshotStore(location).versions() == [0, 1]
    snapshot = load_snapshot(storage, 1, KEY, storage_options=options, dest_dir=tmp_path / "copy")
    assert snapshot.manifest["samples"] == 64
    assert (tmp_path / "copy" / "model.onnx").is_file()
    rows = DataLog(location, n_features=x.shape[1], label_kind="int").read_rows(
        up_to_version=snapshot.manifest["data_version"], seq_end=snapshot.manifest["data_seq_end"]
    )
    assert len(rows) == 64
    sent_rows = [int(request_id.removeprefix("req-")) for request_id in rows.request_id]
    np.testing.assert_array_equal(rows.features, x[sent_rows])
    assert rows.label == y[sent_rows].tolist()
