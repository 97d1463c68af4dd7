"""A model that downloads but does not load, in a real `mlserving serve` process.

Asked by its pod (``MLSERVING_EXIT_ON_REFUSED_MODEL=true``, which the operator sets), the server ends
with exit code 5 and a one-line JSON report (``ModelLoadFailed``, naming the model and the error) in
its termination message file and as its last log line; the operator reads it from the pod. Not asked,
it stays live but not ready. The contract's words are spelled out here, as the operator reads them.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
import skops.io as sio
from sklearn.preprocessing import StandardScaler

from support import Proc, free_port, wait_until
from support.models import IrisModels, serve_argv, serving

pytestmark = pytest.mark.integration

EXIT_ENV = "MLSERVING_EXIT_ON_REFUSED_MODEL"
TERMINATION_PATH_ENV = "MLSERVING_TERMINATION_MESSAGE_PATH"
LOAD_FAILED_EXIT_CODE = 5


def truncated_onnx(iris: IrisModels, directory: Path) -> tuple[Path, str]:
    path = directory / "model.onnx"
    data = iris.classifier_onnx.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path, "model.onnx: not a valid ONNX model"


def truncated_skops(iris: IrisModels, directory: Path) -> tuple[Path, str]:
    path = directory / "model.skops"
    data = iris.classifier_skops.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path, "model.skops: not a loadable skops file"


def not_a_model(iris: IrisModels, directory: Path) -> tuple[Path, str]:
    path = directory / "model.bin"
    path.write_text("<html>404 Not Found</html>\n")
    return path, "model.bin: cannot tell the model format"


def without_predict(iris: IrisModels, directory: Path) -> tuple[Path, str]:
    path = directory / "scaler.skops"
    sio.dump(StandardScaler().fit(iris.features), path)
    return path, "scaler.skops: StandardScaler has no predict method"


BROKEN: dict[str, Callable[[IrisModels, Path], tuple[Path, str]]] = {
    "truncated-onnx": truncated_onnx,
    "truncated-skops": truncated_skops,
    "not-a-model": not_a_model,
    "without-predict": without_predict,
}


@pytest.mark.parametrize("broken", list(BROKEN))
def test_a_model_that_fails_to_load_ends_the_server_with_a_report(iris, tmp_path, broken):
    model, why = BROKEN[broken](iris, tmp_path)
    termination_log = tmp_path / "termination-log"
    termination_log.touch()  # the kubelet mounts an empty file
    env = {EXIT_ENV: "true", TERMINATION_PATH_ENV: str(termination_log), "PYTHONUNBUFFERED": "1"}
    proc = Proc(serve_argv(model, name="m", port=free_port()), tmp_path / "server.log", env=env)
    try:
        code = proc.popen.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.stop()
        output = proc.log_path.read_text(errors="replace")
        raise AssertionError(f"the server did not exit:\n{output[-3000:]}") from None
    proc.stop()
    output = proc.log_path.read_text(errors="replace")
    assert code == LOAD_FAILED_EXIT_CODE, output[-3000:]
    text = termination_log.read_text()
    assert "\n" not in text.strip() and len(text.encode()) <= 4096
    report = json.loads(text)
    assert report["reason"] == "ModelLoadFailed", report
    assert report["message"].startswith(f"load failed: {model.as_uri()}: "), report
    assert why in report["message"], report
    last_line = output.strip().splitlines()[-1]
    assert json.loads(last_line) == report  # FallbackToLogsOnError reads the log tail


def test_without_being_asked_the_server_stays_live_but_not_ready(iris, tmp_path, client):
    model, why = truncated_onnx(iris, tmp_path)
    with serving(tmp_path, model, name="m", wait="live", env={EXIT_ENV: "false"}) as server:
        wait_until(lambda: "failed" in client.get(f"{server.url}/v2/health/ready").text, message="failure")
        ready = client.get(f"{server.url}/v2/health/ready")
        assert ready.status_code != 200 and why in ready.json()["error"]
        assert client.get(f"{server.url}/v2/health/live").status_code == 200
        assert server.proc.alive()
