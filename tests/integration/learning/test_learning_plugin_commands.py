"""`mlrollouts learning pin|unpin|history|export` against the API emulator (a real process over HTTP),
with snapshots and a data log written by a real learner process."""

from __future__ import annotations

import base64
import contextlib
import io
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from kubernetes import client, config
from learner_process import KEY, learner_process, send_feedback, send_logs

from mlrollouts.cli.main import main
from mlserving.learning.export import retrain
from mlserving.learning.location import StorageLocation
from mlserving.learning.snapshots import SnapshotStore, read_learner_state
from support import Proc, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO_ROOT = Path(__file__).resolve().parents[3]
BIN = Path(sys.executable).parent
GROUP, VERSION, PLURAL = "mlrollouts.io", "v1alpha1", "modeldeployments"


@pytest.fixture(scope="module")
def kubeconfig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    workdir = tmp_path_factory.mktemp("learning-apiserver")
    path = workdir / "kubeconfig"
    argv = [str(BIN / "mlrollouts"), "local", "apiserver", "--port", "0", "--kubeconfig", str(path)]
    proc = Proc(argv, workdir / "apiserver.log")
    try:
        wait_until(
            lambda: proc.alive() and path.exists() and "serving on" in proc.output(),
            timeout=30,
            message="the API emulator to serve",
        )
        api = config.new_client_from_config(config_file=str(path))
        extensions = client.ApiextensionsV1Api(api)
        extensions.create_custom_resource_definition(
            yaml.safe_load((REPO_ROOT / "crds" / "modeldeployments.mlrollouts.io.yaml").read_text())
        )
        custom = client.CustomObjectsApi(api)
        wait_until(
            lambda: custom.list_namespaced_custom_object(GROUP, VERSION, "default", PLURAL) is not None,
            timeout=10,
            message="the CRD to be served",
        )
        yield path
    finally:
        proc.stop()


def cli(kubeconfig: Path, *args: str) -> subprocess.CompletedProcess[str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main([*args, "--kubeconfig", str(kubeconfig)])
        except SystemExit as exc:
            code = int(exc.code or 0)
    return subprocess.CompletedProcess(list(args), code, out.getvalue(), err.getvalue())


def api(kubeconfig: Path) -> tuple[client.CustomObjectsApi, client.CoreV1Api]:
    connection = config.new_client_from_config(config_file=str(kubeconfig))
    return client.CustomObjectsApi(connection), client.CoreV1Api(connection)


def create_learning(kubeconfig: Path, name: str, storage_uri: str, status: dict[str, Any]) -> None:
    custom, _ = api(kubeconfig)
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ModelDeployment",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "model": {"uri": "file:///models/cancer.skops", "format": "sklearn"},
            "learning": {"enabled": True, "snapshotEvery": 64, "storage": {"uri": storage_uri}},
        },
    }
    custom.create_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, body)
    custom.patch_namespaced_custom_object_status(GROUP, VERSION, "default", PLURAL, name, {"status": status})


LEARNING_STATUS = {
    "learning": {
        "latestSnapshot": 2,
        "servingSnapshot": 1,
        "lastGoodSnapshot": 1,
        "pinned": 1,
        "pinnedBy": "Guard",
        "samples": 140,
        "metrics": {"accuracy": 0.55},
        "snapshots": [
            {"version": 0, "samples": 0, "verdict": "Unjudged", "dataRange": "[0, 0)"},
            {"version": 1, "parent": 0, "samples": 64, "metrics": {"accuracy": 0.95}, "dataVersion": 3,
             "dataRange": "[0, 64)", "verdict": "Good"},
            {"version": 2, "parent": 1, "samples": 128, "metrics": {"accuracy": 0.5}, "dataVersion": 6,
             "dataRange": "[0, 128)", "verdict": "Bad", "reason": "its own metrics breach the guard"},
        ],
    }
}  # fmt: skip


def test_pin_unpin_and_history(kubeconfig: Path):
    create_learning(kubeconfig, "steer", "file:///tmp/unused", LEARNING_STATUS)
    custom, _ = api(kubeconfig)

    def pinned() -> Any:
        obj = custom.get_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, "steer")
        return obj["spec"]["learning"].get("pinnedSnapshot")

    history = cli(kubeconfig, "learning", "history", "steer")
    assert history.returncode == 0, history.stderr
    lines = history.stdout.splitlines()
    assert lines[0].startswith("serving snapshot 1, latest 2, last good 1, pinned by Guard to 1")
    assert lines[1].split()[:3] == ["SNAPSHOT", "PARENT", "AGE"]
    assert lines[3].split()[0] == "1" and "accuracy=0.95" in lines[3] and "serving" in lines[3]
    assert lines[4].split()[0] == "2" and "Bad" in lines[4]

    done = cli(kubeconfig, "learning", "pin", "steer", "2")
    assert done.returncode == 0 and pinned() == 2
    assert "the guard marked snapshot 2 bad" in done.stderr
    refused = cli(kubeconfig, "learning", "pin", "steer", "7")
    assert refused.returncode == 1 and "snapshot 7 is not published yet" in refused.stderr
    assert pinned() == 2
    assert cli(kubeconfig, "learning", "unpin", "steer").returncode == 0
    assert pinned() is None
    missing = cli(kubeconfig, "learning", "history", "nobody")
    assert missing.returncode == 1 and "not found" in missing.stderr


def test_export_writes_the_snapshot_and_its_rows_and_they_retrain_the_same_model(
    kubeconfig: Path, tmp_path: Path, cancer
):
    model, x, y = cancer
    storage = (tmp_path / "store").as_uri()
    flags = ["--snapshot-every", "64", "--batch-size", "16"]
    with learner_process(tmp_path, model, storage, extra=flags) as learner:
        for first in (0, 50, 100):  # several commits: the table grows past snapshot 1's data version
            send_logs(learner, x[first : first + 50], first)
            assert set(send_feedback(learner, y[first : first + 50], first)) == {200}
        wait_until(lambda: learner.status()["latest"] == 2, timeout=30, message="snapshot 2")
    create_learning(kubeconfig, "cancer", storage, {})
    _, core = api(kubeconfig)
    secret = {
        "metadata": {"name": "cancer-snapshot-key"},
        "data": {"signing-key": base64.b64encode(KEY).decode()},
    }
    core.create_namespaced_secret("default", secret)

    out = tmp_path / "export"
    done = cli(kubeconfig, "learning", "export", "cancer", "--snapshot", "1", "--output", str(out))
    assert done.returncode == 0, done.stderr
    assert "64 rows (seq 0..64" in done.stdout
    assert {"manifest.json", "learner.skops", "rows.jsonl", "export.json", "initial"} <= {
        p.name for p in out.iterdir()
    }
    retrained = retrain(out)
    snapshot = SnapshotStore(StorageLocation(storage)).load(1, KEY)
    np.testing.assert_array_equal(retrained.coef_, read_learner_state(snapshot)["estimator"].coef_)

    wrong_key = tmp_path / "wrong.key"
    wrong_key.write_bytes(b"another-key-0123456789")
    refused = cli(
        kubeconfig, "learning", "export", "cancer", "--snapshot", "1", "--output", str(tmp_path / "x"),
        "--signing-key-file", str(wrong_key),
    )  # fmt: skip
    assert refused.returncode == 1 and "signature does not match" in refused.stderr
