"""Open Inference Protocol and KServe V1 against a real server process."""

from __future__ import annotations

import struct

import httpx
import numpy as np
import pytest

from support.models import IDENTITY_DATATYPES

pytestmark = pytest.mark.integration

ROWS = [[5.1, 3.5, 1.4, 0.2], [6.4, 3.2, 4.5, 1.5], [6.3, 3.3, 6.0, 2.5]]


def test_health_and_server_metadata(onnx_server, client):
    assert client.get(f"{onnx_server.url}/v2/health/live").status_code == 200
    assert client.get(f"{onnx_server.url}/v2/health/ready").status_code == 200
    for path in ("/v2", "/v2/"):
        meta = client.get(onnx_server.url + path).json()
        assert meta["name"] == "mlserving"
        assert isinstance(meta["version"], str) and isinstance(meta["extensions"], list)


def test_model_metadata_reports_real_tensors(onnx_server, client):
    for path in ("/v2/models/iris", "/v2/models/iris/versions/1"):
        meta = client.get(onnx_server.url + path).json()
        assert meta["name"] == "iris"
        assert meta["versions"] == ["1"]
        assert meta["platform"] == "onnxruntime_onnx"
        assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 4]}]
        assert meta["outputs"] == [
            {"name": "label", "datatype": "INT64", "shape": [-1]},
            {"name": "probabilities", "datatype": "FP32", "shape": [-1, 3]},
        ]
    assert client.get(f"{onnx_server.url}/v2/models/iris/ready").status_code == 200
    assert client.get(f"{onnx_server.url}/v2/models/iris/versions/1/ready").status_code == 200


def test_infer_flat_and_nested_data_agree(onnx_server, client):
    flat = {
        "inputs": [
            {"name": "input", "shape": [3, 4], "datatype": "FP64", "data": [v for row in ROWS for v in row]}
        ]
    }
    nested = {"inputs": [{"name": "input", "shape": [3, 4], "datatype": "FP32", "data": ROWS}]}
    a = client.post(f"{onnx_server.url}/v2/models/iris/infer", json=flat).json()
    b = client.post(f"{onnx_server.url}/v2/models/iris/versions/1/infer", json=nested).json()
    assert a["model_name"] == "iris" and a["model_version"] == "1"
    outputs = {o["name"]: o for o in a["outputs"]}
    assert outputs["label"] == {"name": "label", "datatype": "INT64", "shape": [3], "data": [0, 1, 2]}
    probs = np.array(outputs["probabilities"]["data"]).reshape(outputs["probabilities"]["shape"])
    assert probs.shape == (3, 3) and np.allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    assert [o["data"] for o in a["outputs"]] == [o["data"] for o in b["outputs"]]


def test_single_row_without_batch_dimension(onnx_server, client):
    body = {"inputs": [{"name": "input", "shape": [4], "datatype": "FP32", "data": ROWS[2]}]}
    out = client.post(f"{onnx_server.url}/v2/models/iris/infer", json=body).json()
    assert out["outputs"][0]["data"] == [2]


def test_id_and_parameters_round_trip_and_generated_ids(onnx_server, client):
    body = {
        "id": "req-42",
        "parameters": {"trace": "abc", "n": 3},
        "inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": ROWS[0]}],
    }
    out = client.post(f"{onnx_server.url}/v2/models/iris/infer", json=body).json()
    assert out["id"] == "req-42"
    assert out["parameters"] == {"trace": "abc", "n": 3}
    del body["id"]
    ids = {client.post(f"{onnx_server.url}/v2/models/iris/infer", json=body).json()["id"] for _ in range(3)}
    assert len(ids) == 3 and all(isinstance(i, str) and len(i) >= 16 for i in ids)


def test_requested_outputs_only(onnx_server, client):
    body = {
        "inputs": [{"name": "input", "shape": [2, 4], "datatype": "FP32", "data": ROWS[:2]}],
        "outputs": [{"name": "probabilities"}],
    }
    out = client.post(f"{onnx_server.url}/v2/models/iris/infer", json=body).json()
    assert [o["name"] for o in out["outputs"]] == ["probabilities"]
    assert out["outputs"][0]["shape"] == [2, 3]


def test_multiple_inputs_and_outputs(two_input_server, client):
    body = {
        "inputs": [
            {"name": "b", "shape": [2, 2], "datatype": "FP32", "data": [10, 20, 30, 40]},
            {"name": "a", "shape": [2, 2], "datatype": "INT32", "data": [[1, 2], [3, 4]]},
        ]
    }
    out = client.post(f"{two_input_server.url}/v2/models/pair/infer", json=body).json()
    got = {o["name"]: o["data"] for o in out["outputs"]}
    assert got == {"sum": [11, 22, 33, 44], "product": [10, 40, 90, 160]}
    meta = client.get(f"{two_input_server.url}/v2/models/pair").json()
    assert [i["name"] for i in meta["inputs"]] == ["a", "b"]


def _identity_values(datatype: str) -> list:
    return {
        "BOOL": [True, False, True, False, False, True],
        "UINT8": [0, 1, 2, 128, 254, 255],
        "UINT16": [0, 1, 2, 300, 65534, 65535],
        "UINT32": [0, 1, 2, 70000, 4294967294, 4294967295],
        "UINT64": [0, 1, 2, 2**40, 2**53, 2**63 - 1],
        "INT8": [-128, -1, 0, 1, 100, 127],
        "INT16": [-32768, -1, 0, 1, 300, 32767],
        "INT32": [-(2**31), -1, 0, 1, 70000, 2**31 - 1],
        "INT64": [-(2**63), -1, 0, 1, 2**40, 2**63 - 1],
        "FP16": [-2.5, -1.0, 0.0, 0.5, 1024.0, 65504.0],
        "FP32": [-1.5, 0.0, 0.25, 3.140625, 1e30, -1e-30],
        "FP64": [-1.5, 0.0, 0.1, 3.141592653589793, 1e300, -1e-300],
        "BYTES": ["a", "", "héllo", "x y", "42", "🙂"],
    }[datatype]


def test_every_datatype_round_trips(identity_server, client):
    inputs = [
        {"name": f"in_{dt.lower()}", "shape": [2, 3], "datatype": dt, "data": _identity_values(dt)}
        for dt in IDENTITY_DATATYPES
    ]
    resp = client.post(f"{identity_server.url}/v2/models/identity/infer", json={"inputs": inputs})
    assert resp.status_code == 200, resp.text
    outputs = {o["name"]: o for o in resp.json()["outputs"]}
    for dt in IDENTITY_DATATYPES:
        out = outputs[f"out_{dt.lower()}"]
        assert out["datatype"] == dt and out["shape"] == [2, 3], out
        want = _identity_values(dt)
        if dt in ("FP16", "FP32"):
            np.testing.assert_allclose(out["data"], want, rtol=1e-3)
        else:
            assert out["data"] == want, dt


def test_binary_tensor_data_extension(identity_server, client):
    """The binary extension used by Triton clients: raw little-endian tensors after the JSON header."""
    fp64 = np.arange(6, dtype=np.float64) / 4
    inputs, blobs = [], []
    for dt in IDENTITY_DATATYPES:
        name = f"in_{dt.lower()}"
        if dt == "FP64":
            blob = fp64.tobytes()
            inputs.append(
                {"name": name, "shape": [2, 3], "datatype": dt, "parameters": {"binary_data_size": len(blob)}}
            )
            blobs.append(blob)
        elif dt == "BYTES":
            blob = b"".join(struct.pack("<I", len(s)) + s for s in [b"a", b"bb", b"", b"c", b"dd", b"e"])
            inputs.append(
                {"name": name, "shape": [2, 3], "datatype": dt, "parameters": {"binary_data_size": len(blob)}}
            )
            blobs.append(blob)
        else:
            inputs.append({"name": name, "shape": [2, 3], "datatype": dt, "data": _identity_values(dt)})
    header = httpx.Response(
        200, json={"inputs": inputs, "outputs": [{"name": "out_fp64", "parameters": {"binary_data": True}}]}
    ).content
    resp = client.post(
        f"{identity_server.url}/v2/models/identity/infer",
        content=header + b"".join(blobs),
        headers={
            "Inference-Header-Content-Length": str(len(header)),
            "Content-Type": "application/octet-stream",
        },
    )
    assert resp.status_code == 200, resp.text
    length = int(resp.headers["inference-header-content-length"])
    meta = httpx.Response(200, content=resp.content[:length]).json()
    (out,) = meta["outputs"]
    assert out["name"] == "out_fp64" and out["parameters"]["binary_data_size"] == 48
    np.testing.assert_array_equal(np.frombuffer(resp.content[length:], dtype="<f8"), fp64)


def test_v1_predict_and_metadata(onnx_server, client):
    out = client.post(f"{onnx_server.url}/v1/models/iris:predict", json={"instances": ROWS})
    assert out.status_code == 200, out.text
    assert out.json()["predictions"] == [0, 1, 2]
    assert client.get(f"{onnx_server.url}/v1/models/iris").json() == {"name": "iris", "ready": True}
    assert client.get(f"{onnx_server.url}/v1/models").json() == {"models": ["iris"]}


def test_unknown_model_version_and_route_are_404_with_error(onnx_server, client):
    for method, path in [
        ("GET", "/v2/models/nope"),
        ("GET", "/v2/models/iris/versions/7"),
        ("POST", "/v2/models/nope/infer"),
        ("POST", "/v2/models/iris/versions/2/infer"),
        ("POST", "/v1/models/nope:predict"),
        ("GET", "/nothing/here"),
    ]:
        resp = client.request(method, onnx_server.url + path, json={"inputs": []})
        assert resp.status_code == 404, (path, resp.text)
        assert resp.json()["error"], path
    assert "nope" in client.get(f"{onnx_server.url}/v2/models/nope").json()["error"]
    assert client.delete(f"{onnx_server.url}/v2/models/iris").status_code == 405


def test_head_requests_and_keep_alive(onnx_server, client):
    # HEAD answers carry no body; the connection stays usable for the next request.
    for _ in range(3):
        head = client.head(f"{onnx_server.url}/v2/health/ready")
        assert head.status_code == 200 and head.content == b""
        assert client.get(f"{onnx_server.url}/v2/health/live").json() == {"live": True}
