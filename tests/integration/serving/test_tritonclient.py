"""A third-party Open Inference Protocol client (tritonclient[http]) works unchanged."""

from __future__ import annotations

import numpy as np
import pytest
import tritonclient.http as triton

pytestmark = pytest.mark.integration


@pytest.fixture
def triton_client(onnx_server):
    client = triton.InferenceServerClient(url=onnx_server.url.removeprefix("http://"))
    yield client
    client.close()


def test_live_ready_and_metadata(triton_client):
    assert triton_client.is_server_live()
    assert triton_client.is_server_ready()
    assert triton_client.is_model_ready("iris")
    meta = triton_client.get_model_metadata("iris")
    assert meta["inputs"][0] == {"name": "input", "datatype": "FP32", "shape": [-1, 4]}
    assert triton_client.get_server_metadata()["name"] == "mlserving"


@pytest.mark.parametrize("binary", [True, False], ids=["binary-tensors", "json-tensors"])
def test_infer_with_numpy_inputs(triton_client, iris, binary):
    x = iris.features.astype(np.float32)
    inp = triton.InferInput("input", list(x.shape), "FP32")
    inp.set_data_from_numpy(x, binary_data=binary)
    outputs = [
        triton.InferRequestedOutput("label", binary_data=binary),
        triton.InferRequestedOutput("probabilities", binary_data=binary),
    ]
    result = triton_client.infer("iris", [inp], outputs=outputs, request_id="triton-1")
    assert result.get_response()["id"] == "triton-1"
    np.testing.assert_array_equal(result.as_numpy("label"), iris.labels)
    proba = result.as_numpy("probabilities")
    assert proba.shape == (len(x), 3) and np.allclose(proba.sum(axis=1), 1, atol=1e-5)


def test_infer_default_outputs(triton_client, iris):
    x = iris.features[:2].astype(np.float32)
    inp = triton.InferInput("input", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    result = triton_client.infer("iris", [inp])
    np.testing.assert_array_equal(result.as_numpy("label"), iris.labels[:2])
