"""Decoding and encoding of Open Inference Protocol tensors (pure functions)."""

from __future__ import annotations

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from mlserving.runtimes.base import DATATYPES, TensorSpec
from mlserving.server.protocol import (
    ProtocolError,
    bind_inputs,
    decode_request,
    encode_binary,
    encode_output,
)

NUMERIC = [d for d in DATATYPES if d != "BYTES"]


def roundtrip(arr: np.ndarray, datatype: str) -> np.ndarray:
    """Encode as a response tensor, send through JSON, decode as a request tensor."""
    encoded = orjson.loads(orjson.dumps(encode_output("t", arr), option=orjson.OPT_SERIALIZE_NUMPY))
    assert encoded["datatype"] == datatype
    request = decode_request({"inputs": [{**encoded}]}, max_elements=10**6, allow_nan=False)
    return request.inputs[0].array


@settings(max_examples=60, deadline=None)
@given(data=st.data(), datatype=st.sampled_from(NUMERIC))
def test_numeric_tensors_round_trip_exactly(data, datatype):
    dtype = DATATYPES[datatype]
    elements = None
    if dtype.kind == "f":
        elements = hnp.from_dtype(dtype, allow_nan=False, allow_infinity=False)
    arr = data.draw(
        hnp.arrays(dtype, hnp.array_shapes(min_dims=1, max_dims=3, max_side=4), elements=elements)
    )
    back = roundtrip(arr, datatype)
    assert back.dtype == dtype and back.shape == arr.shape
    np.testing.assert_array_equal(back, arr)


@settings(max_examples=30, deadline=None)
@given(st.lists(st.text(max_size=6), min_size=1, max_size=6))
def test_bytes_round_trip(values):
    arr = np.array(values, dtype=object)
    assert roundtrip(arr, "BYTES").tolist() == values


def test_binary_and_json_decoding_agree():
    arr = np.arange(6, dtype=np.int16).reshape(2, 3)
    blob = encode_binary(arr)
    body = {
        "inputs": [
            {"name": "x", "shape": [2, 3], "datatype": "INT16", "parameters": {"binary_data_size": len(blob)}}
        ]
    }
    binary = decode_request(body, max_elements=100, allow_nan=False, binary=blob).inputs[0].array
    np.testing.assert_array_equal(binary, arr)


@pytest.mark.parametrize(
    ("tensor", "fragment"),
    [
        ({"name": "x", "shape": [3], "datatype": "INT8", "data": [1, 2, 200]}, "range of INT8"),
        ({"name": "x", "shape": [2], "datatype": "INT64", "data": [1.5, 2]}, "must hold integers"),
        ({"name": "x", "shape": [2], "datatype": "BOOL", "data": [1, 0]}, "booleans"),
        ({"name": "x", "shape": [2], "datatype": "FP16", "data": [1e6, 0]}, "not a finite FP16"),
        ({"name": "x", "shape": [10**9], "datatype": "FP32", "data": [1]}, "more than the limit"),
        (
            {"name": "x", "shape": [2], "datatype": "BYTES", "data": ["a", 1]},
            "BYTES elements must be strings",
        ),
    ],
)
def test_decoding_errors_name_the_place(tensor, fragment):
    with pytest.raises(ProtocolError) as exc:
        decode_request({"inputs": [tensor]}, max_elements=10**6, allow_nan=False)
    assert fragment in exc.value.message and "inputs[0]" in exc.value.message


def test_nan_allowed_when_configured():
    raw = np.array([np.nan, 1.0]).tobytes()
    body = {
        "inputs": [{"name": "x", "shape": [2], "datatype": "FP64", "parameters": {"binary_data_size": 16}}]
    }
    with pytest.raises(ProtocolError):
        decode_request(body, max_elements=10, allow_nan=False, binary=raw)
    arr = decode_request(body, max_elements=10, allow_nan=True, binary=raw).inputs[0].array
    assert np.isnan(arr[0])


def test_bind_inputs_casts_and_adds_batch_dimension():
    specs = [TensorSpec("input", "FP32", (-1, 4))]
    request = decode_request(
        {"inputs": [{"name": "input", "shape": [4], "datatype": "INT64", "data": [1, 2, 3, 4]}]},
        max_elements=100,
        allow_nan=False,
    )
    bound = bind_inputs(request.inputs, specs, "m")
    assert bound["input"].dtype == np.float32 and bound["input"].shape == (1, 4)
    with pytest.raises(ProtocolError, match="missing input"):
        bind_inputs([], specs, "m")
