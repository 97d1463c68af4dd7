"""Bad requests get a 4xx with {"error": "<what and where>"}; the server keeps serving."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytestmark = pytest.mark.integration

GOOD_ROW = [5.1, 3.5, 1.4, 0.2]


def tensor(**overrides):
    base = {"name": "input", "shape": [1, 4], "datatype": "FP32", "data": GOOD_ROW}
    base.update(overrides)
    return {"inputs": [base]}


CASES = [
    # (description, body, status, substring of the error)
    ("malformed JSON", b'{"inputs": [', 400, "malformed JSON"),
    ("not an object", b"[1, 2]", 400, "JSON object"),
    ("no inputs", b"{}", 400, "'inputs'"),
    ("empty inputs", json.dumps({"inputs": []}).encode(), 400, "'inputs'"),
    ("input not an object", json.dumps({"inputs": [3]}).encode(), 400, "inputs[0]"),
    (
        "missing name",
        json.dumps({"inputs": [{"shape": [1], "datatype": "FP32", "data": [1]}]}).encode(),
        400,
        "inputs[0].name",
    ),
    ("unknown datatype", json.dumps(tensor(datatype="FLOAT")).encode(), 400, "inputs[0].datatype"),
    (
        "wrong datatype for data",
        json.dumps(tensor(datatype="INT64")).encode(),
        400,
        "inputs[0].data must hold integers",
    ),
    ("strings for FP32", json.dumps(tensor(data=["a", "b", "c", "d"])).encode(), 400, "inputs[0].data"),
    ("bool for FP32", json.dumps(tensor(data=[True, False, True, False])).encode(), 400, "inputs[0].data"),
    (
        "words for a float model",
        json.dumps(tensor(datatype="BYTES", data=["a", "b", "c", "d"])).encode(),
        400,
        "inputs[0] (input): BYTES values are not numbers",
    ),
    (
        "out-of-range UINT8",
        json.dumps(tensor(datatype="UINT8", data=[1, 2, 3, 300])).encode(),
        400,
        "range of UINT8",
    ),
    (
        "shape/data mismatch",
        json.dumps(tensor(shape=[1, 4], data=[1.0, 2.0, 3.0])).encode(),
        400,
        "needs 4 values, data has 3",
    ),
    (
        "shape not fitting the model",
        json.dumps(tensor(shape=[2, 2])).encode(),
        400,
        "does not fit the model input [-1, 4]",
    ),
    ("negative dimension", json.dumps(tensor(shape=[-1, 4])).encode(), 400, "inputs[0].shape[0]"),
    ("non-integer dimension", json.dumps(tensor(shape=[1.5, 4])).encode(), 400, "inputs[0].shape[0]"),
    (
        "ragged nested data",
        json.dumps(tensor(shape=[2, 4], data=[[1, 2, 3, 4], [1, 2]])).encode(),
        400,
        "ragged",
    ),
    ("unknown input name", json.dumps(tensor(name="features")).encode(), 400, "'features' is not an input"),
    ("duplicate input", json.dumps({"inputs": tensor()["inputs"] * 2}).encode(), 400, "more than once"),
    (
        "unknown output",
        json.dumps({**tensor(), "outputs": [{"name": "score"}]}).encode(),
        400,
        "'score' is not an output",
    ),
    ("id not a string", json.dumps({**tensor(), "id": 5}).encode(), 400, "'id'"),
    (
        "infinity",
        b'{"inputs":[{"name":"input","shape":[1,4],"datatype":"FP32","data":[1e400,1,1,1]}]}',
        400,
        "malformed JSON",
    ),
    (
        "NaN literal",
        b'{"inputs":[{"name":"input","shape":[1,4],"datatype":"FP32","data":[NaN,1,1,1]}]}',
        400,
        "malformed JSON",
    ),
    (
        "FP32 overflow",
        json.dumps(tensor(data=[1e39, 1, 1, 1])).encode(),
        400,
        "inputs[0].data[0] is not a finite FP32",
    ),
    (
        "FP64 beyond the model's FP32",
        json.dumps(tensor(datatype="FP64", data=[1e39, 1, 1, 1])).encode(),
        400,
        "exceed the range of the model's FP32",
    ),
    ("NaN as BYTES", json.dumps(tensor(datatype="BYTES", data=["nan", "1", "1", "1"])).encode(), 400, "NaN"),
    (
        "memory bomb shape",
        json.dumps(tensor(shape=[100000, 100000], data=[1.0])).encode(),
        413,
        "more than the limit",
    ),
    ("deep rank", json.dumps(tensor(shape=[1] * 20)).encode(), 400, "dimensions"),
    (
        "deeply nested data",
        (
            '{"inputs":[{"name":"input","shape":[1,4],"datatype":"FP32","data":'
            + "[" * 5000
            + "]" * 5000
            + "}]}"
        ).encode(),
        400,
        "malformed JSON",
    ),
]


@pytest.mark.parametrize(("description", "body", "status", "fragment"), CASES, ids=[c[0] for c in CASES])
def test_bad_infer_request(onnx_server, client, description, body, status, fragment):
    resp = client.post(f"{onnx_server.url}/v2/models/iris/infer", content=body)
    assert resp.status_code == status, resp.text
    error = resp.json()["error"]
    assert fragment in error, error


def test_server_still_ready_and_correct_after_bad_input(onnx_server, client):
    for _, body, _, _ in CASES:
        client.post(f"{onnx_server.url}/v2/models/iris/infer", content=body)
    assert client.get(f"{onnx_server.url}/v2/health/ready").status_code == 200
    ok = client.post(f"{onnx_server.url}/v2/models/iris/infer", json=tensor())
    assert ok.status_code == 200 and ok.json()["outputs"][0]["data"] == [0]
    assert onnx_server.proc.alive()


def test_oversized_body_is_413(onnx_server, client):
    big = b'{"inputs": [' + b" " * (17 * 1024 * 1024) + b"]}"
    resp = client.post(f"{onnx_server.url}/v2/models/iris/infer", content=big)
    assert resp.status_code == 413
    assert "larger than the limit" in resp.json()["error"]


def test_oversized_chunked_body_is_413(onnx_server, client):
    def chunks():
        for _ in range(20):
            yield b" " * (1024 * 1024)

    resp = client.post(f"{onnx_server.url}/v2/models/iris/infer", content=chunks())
    assert resp.status_code == 413
    assert client.get(f"{onnx_server.url}/v2/health/ready").status_code == 200


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b"{bad", "malformed JSON"),
        (b'{"instances": []}', "'instances'"),
        (b'{"instances": [[1, 2], [1, 2, 3]]}', "ragged"),
        (b'{"instances": [["a", "b", "c", "d"]]}', "instances.data"),
        (b'{"instances": [[1, 2, 3]]}', "does not fit"),
    ],
)
def test_bad_v1_request(onnx_server, client, body, fragment):
    resp = client.post(f"{onnx_server.url}/v1/models/iris:predict", content=body)
    assert resp.status_code == 400, resp.text
    assert fragment in resp.json()["error"]


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        (b"nope", 400, "malformed JSON"),
        (b'{"reward": 1}', 400, "'id'"),
        (b'{"id": "x"}', 400, "'reward'"),
        (b'{"id": "x", "reward": "high"}', 400, "finite number"),
        (b'{"id": "never-issued", "reward": 1}', 404, "not produced by this server"),
    ],
)
def test_bad_feedback(onnx_server, client, body, status, fragment):
    resp = client.post(f"{onnx_server.url}/v2/models/iris/feedback", content=body)
    assert resp.status_code == status, resp.text
    assert fragment in resp.json()["error"]


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=5),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)
tensors = st.fixed_dictionaries(
    {},
    optional={
        "name": st.sampled_from(["input", "x", ""]) | json_values,
        "shape": st.lists(st.integers(min_value=-2, max_value=10**7), max_size=4) | json_values,
        "datatype": st.sampled_from(["FP32", "FP64", "INT64", "UINT8", "BOOL", "BYTES", "FP16", "int"]),
        "data": st.lists(st.floats(allow_nan=False, allow_infinity=False, width=32), max_size=12)
        | json_values,
        "parameters": json_values,
    },
)
requests_ = st.fixed_dictionaries(
    {"inputs": st.lists(tensors, max_size=3) | json_values},
    optional={"id": json_values, "outputs": json_values, "parameters": json_values},
)


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(body=requests_)
def test_arbitrary_requests_never_crash_the_server(onnx_server, client, body):
    resp = client.post(f"{onnx_server.url}/v2/models/iris/infer", json=body)
    assert resp.status_code in (200, 400, 413), resp.text
    payload = resp.json()
    if resp.status_code == 200:
        assert payload["outputs"][0]["name"] in ("label", "probabilities")
    else:
        assert isinstance(payload["error"], str) and payload["error"]
