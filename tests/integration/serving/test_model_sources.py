"""Model sources: file://, http:// (sha256, size limit) and s3:// (a real moto server process)."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest

from support import PYTHON, free_port, running, wait_until
from support.models import metric_value, serving

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def http_models(iris, tmp_path_factory):
    root = tmp_path_factory.mktemp("http-root")
    shutil.copy(iris.classifier_onnx, root / "iris.onnx")
    port = free_port()
    argv = [PYTHON, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", str(root)]
    with running(argv, root.parent / f"http-{port}.log", ready_url=f"http://127.0.0.1:{port}/iris.onnx"):
        yield f"http://127.0.0.1:{port}"


def _check_serves(client, server, iris):
    out = client.post(f"{server.url}/v2/models/iris/infer", json=server.infer_body(iris.features)).json()
    assert out["outputs"][0]["data"] == iris.labels.tolist()


def test_file_uri(iris, tmp_path, client):
    with serving(tmp_path, iris.classifier_onnx.as_uri(), name="iris") as server:
        _check_serves(client, server, iris)


def test_http_with_sha256(iris, http_models, tmp_path, client):
    digest = hashlib.sha256(iris.classifier_onnx.read_bytes()).hexdigest()
    extra = ["--model-sha256", digest, "--download-dir", str(tmp_path / "dl")]
    with serving(tmp_path, f"{http_models}/iris.onnx", name="iris", extra=extra) as server:
        _check_serves(client, server, iris)


@pytest.mark.parametrize(
    ("extra", "uri_suffix", "fragment"),
    [
        (["--model-sha256", "0" * 64], "/iris.onnx", "sha256 mismatch"),
        (["--max-model-bytes", "100"], "/iris.onnx", "limit of 100"),
        ([], "/missing.onnx", "HTTP 404"),
    ],
    ids=["sha256-mismatch", "size-limit", "not-found"],
)
def test_http_failures_leave_server_live_not_ready(
    iris, http_models, tmp_path, client, extra, uri_suffix, fragment
):
    with serving(tmp_path, http_models + uri_suffix, name="iris", extra=extra, wait="live") as server:
        wait_until(
            lambda: "failed" in client.get(f"{server.url}/v2/health/ready").text, message="load failure"
        )
        assert fragment in client.get(f"{server.url}/v2/health/ready").json()["error"]
        text = client.get(f"{server.url}/metrics").text
        assert metric_value(text, "mlserving_model_load_failures_total", model="iris") == 1.0
        assert fragment in server.proc.output()


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
        yield f"http://127.0.0.1:{port}"


S3_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def test_s3_uri(iris, s3_endpoint, tmp_path, client):
    import boto3

    s3 = boto3.client(
        "s3",
        endpoint_url=s3_endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    s3.create_bucket(Bucket="models")
    s3.upload_file(str(iris.classifier_onnx), "models", "iris/v1/model.onnx")
    extra = ["--s3-endpoint-url", s3_endpoint, "--download-dir", str(tmp_path / "dl")]
    with serving(tmp_path, "s3://models/iris/v1/model.onnx", name="iris", extra=extra, env=S3_ENV) as server:
        _check_serves(client, server, iris)
    # A prefix holding a model directory works too.
    with serving(tmp_path, "s3://models/iris/v1", name="iris", extra=extra, env=S3_ENV) as server:
        _check_serves(client, server, iris)
    with serving(
        tmp_path, "s3://models/iris/v2/model.onnx", name="iris", extra=extra, env=S3_ENV, wait="live"
    ) as server:
        wait_until(
            lambda: "failed" in client.get(f"{server.url}/v2/health/ready").text, message="load failure"
        )
        assert "s3://models/iris/v2/model.onnx" in client.get(f"{server.url}/v2/health/ready").json()["error"]
