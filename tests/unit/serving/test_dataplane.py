"""The model server's data plane without HTTP: lookup, readiness, inference and feedback."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from mlserving.feedback import Feedback
from mlserving.http import HttpError
from mlserving.server.dataplane import DataPlane
from mlserving.server.protocol import decode_request
from mlserving.settings import ServerSettings
from support.models import sklearn_to_onnx


@pytest.fixture(scope="module")
def iris_onnx(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray, np.ndarray]:
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    x, y = load_iris(return_X_y=True)
    path = tmp_path_factory.mktemp("dataplane") / "iris.onnx"
    path.write_bytes(sklearn_to_onnx(LogisticRegression(max_iter=300).fit(x, y)))
    return path, x[:3].astype(np.float32), y[:3]


def settings(model_uri: str) -> ServerSettings:
    return ServerSettings(model_name="iris", model_uri=model_uri, model_version="2", max_batch_size=1)


async def started(plane: DataPlane) -> DataPlane:
    await plane.start()
    for _ in range(400):
        if plane.state != "loading":
            return plane
        await asyncio.sleep(0.025)
    raise AssertionError("the model did not load")


def request(rows: np.ndarray, request_id: str | None = None):
    body = {
        "inputs": [
            {"name": "input", "shape": list(rows.shape), "datatype": "FP32", "data": rows.ravel().tolist()}
        ]
    }
    if request_id is not None:
        body["id"] = request_id
    return decode_request(body, max_elements=1000, allow_nan=False)


async def test_infer_then_feedback_on_the_response(iris_onnx):
    path, rows, labels = iris_onnx
    plane = await started(DataPlane(settings(str(path))))
    try:
        model = plane.model("iris", "2")
        response_id, results = await plane.infer(model, request(rows[:1]))
        assert response_id and results["label"].tolist() == labels[:1].tolist()
        assert model.metadata["name"] == "iris" and model.metadata["versions"] == ["2"]

        echoed, _ = await plane.infer(model, request(rows[:1], request_id="router.stable.1"))
        assert echoed == "router.stable.1"

        right = plane.feedback("iris", Feedback(response_id, None, int(labels[0]), True))
        assert (right.reward, right.correct) == (1.0, True)
        wrong = plane.feedback("iris", Feedback(response_id, 0.25, int(labels[0]) + 1, True))
        assert (wrong.reward, wrong.correct) == (0.25, False)
        with pytest.raises(HttpError) as unknown:
            plane.feedback("iris", Feedback("never-issued", 1.0))
        assert unknown.value.status == 404
    finally:
        await plane.stop()
    assert plane.state == "stopping"
    with pytest.raises(HttpError) as stopping:
        plane.model("iris")
    assert (stopping.value.status, stopping.value.message) == (503, "server is shutting down")


async def test_unknown_model_or_version_is_404(iris_onnx):
    plane = DataPlane(settings(str(iris_onnx[0])))
    for name, version in (("wine", None), ("iris", "1")):
        with pytest.raises(HttpError) as missing:
            plane.lookup(name, version)
        assert missing.value.status == 404


async def test_not_ready_until_loaded_and_failed_load_says_why(tmp_path):
    plane = DataPlane(settings(str(tmp_path / "missing.onnx")))
    with pytest.raises(HttpError) as loading:
        plane.model("iris")
    assert (loading.value.status, loading.value.message) == (503, "model 'iris' is loading")
    await started(plane)
    try:
        assert plane.state == "failed" and not plane.ready
        with pytest.raises(HttpError) as failed:
            plane.metadata("iris")
        assert failed.value.status == 503 and "failed to load" in failed.value.message
    finally:
        await plane.stop()
