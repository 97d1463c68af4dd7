"""The serving image answers Open Inference Protocol (V2) requests for a skops and an ONNX model.

Each model is trained here, mounted read-only, and served by the image running as a restricted pod
would run it; the answers must match the model evaluated in this process.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
from image_support import RESTRICTED, Podman

from support import free_port, http_ok, wait_until
from support.models import IrisModels, train_iris_models

MODEL_NAME = "iris"
READY_TIMEOUT = 120.0  # a cold start compiles the scikit-learn model to ONNX; slow on a busy machine


@dataclass(frozen=True)
class ServedModel:
    url: str
    container: str


@pytest.fixture(scope="module")
def iris(tmp_path_factory: pytest.TempPathFactory) -> IrisModels:
    directory = tmp_path_factory.mktemp("models")
    models = train_iris_models(directory)
    # The container's user is not the owner of the pytest temporary folder.
    directory.chmod(0o755)
    for path in directory.iterdir():
        path.chmod(0o644)
    return models


@pytest.fixture(scope="module", params=["skops", "onnx"])
def served(request, podman: Podman, image, iris: IrisModels) -> Iterator[ServedModel]:
    model_file: Path = iris.classifier_skops if request.param == "skops" else iris.classifier_onnx
    port = free_port()
    container = f"mlrollouts-smoke-{uuid.uuid4().hex[:8]}"
    podman(
        "run", "--detach", f"--name={container}", *RESTRICTED, "--network=host",
        f"--volume={model_file.parent}:/models:ro", image("serving"),
        "serve", "--model-name", MODEL_NAME, "--model-uri", f"/models/{model_file.name}",
        "--host", "127.0.0.1", "--port", str(port),
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        try:
            wait_until(lambda: http_ok(f"{url}/v2/health/ready"), timeout=READY_TIMEOUT, interval=0.5,
                       message=f"the serving container at {url}")  # fmt: skip
        except AssertionError as exc:
            logs = podman("logs", container, check=False)
            raise AssertionError(f"{exc}\n--- container output ---\n{logs.stdout}{logs.stderr}") from None
        yield ServedModel(url=url, container=container)
    finally:
        podman("rm", "--force", "--time=5", container, check=False)


def test_v2_infer_matches_the_trained_model(served: ServedModel, iris: IrisModels):
    import skops.io as sio

    rows = iris.features
    body = {"inputs": [{"name": "input", "shape": list(rows.shape), "datatype": "FP64",
                        "data": rows.ravel().tolist()}]}  # fmt: skip
    response = httpx.post(f"{served.url}/v2/models/{MODEL_NAME}/infer", json=body, timeout=30)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["model_name"] == MODEL_NAME
    outputs = {output["name"]: output for output in answer["outputs"]}

    trained = sio.load(iris.classifier_skops, trusted=sio.get_untrusted_types(file=iris.classifier_skops))
    assert outputs["label"]["data"] == trained.predict(rows).tolist()
    probabilities = np.asarray(outputs["probabilities"]["data"]).reshape(outputs["probabilities"]["shape"])
    np.testing.assert_allclose(probabilities, trained.predict_proba(rows), atol=1e-4)


def test_model_metadata_is_served(served: ServedModel):
    response = httpx.get(f"{served.url}/v2/models/{MODEL_NAME}", timeout=10)
    assert response.status_code == 200, response.text
    assert response.json()["name"] == MODEL_NAME
