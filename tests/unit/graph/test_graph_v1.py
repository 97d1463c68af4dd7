"""KServe V1 requests turned into the graph's V2 request, and its first output into predictions."""

from __future__ import annotations

import pytest

from mlserving.router.graph.request import RequestError
from mlserving.router.graph.v1 import predictions, v2_request

ROWS_OF_FOUR = [{"name": "input", "datatype": "FP32", "shape": [-1, 4]}]


def test_rows_become_one_input_tensor_named_and_typed_from_the_metadata():
    request = v2_request({"instances": [[1, 2, 3, 4], [5, 6, 7, 8]], "id": "r-1"}, ROWS_OF_FOUR, "g")
    assert request == {
        "inputs": [{"name": "input", "datatype": "FP32", "shape": [2, 4], "data": [1, 2, 3, 4, 5, 6, 7, 8]}],
        "id": "r-1",
    }


@pytest.mark.parametrize(
    ("shape", "rows", "expected_shape"),
    [([-1, 1], [1.5, 2.5, 3.5], [3, 1]), ([-1, 3], [1.5, 2.5, 3.5], [1, 3]), ([-1], [1.5, 2.5], [2])],
)
def test_scalar_rows_follow_the_input_shape(shape, rows, expected_shape):
    inputs = [{"name": "x", "datatype": "FP64", "shape": shape}]
    assert v2_request({"inputs": rows}, inputs, "g")["inputs"][0]["shape"] == expected_shape


@pytest.mark.parametrize(
    ("document", "inputs", "fragment"),
    [
        ([1, 2], ROWS_OF_FOUR, "JSON object with 'instances'"),
        ({"instances": []}, ROWS_OF_FOUR, "'instances' must be a non-empty array"),
        ({"rows": [[1]]}, ROWS_OF_FOUR, "'instances' must be a non-empty array"),
        ({"instances": [[1, 2], [3]]}, ROWS_OF_FOUR, "instances[1] has another shape"),
        ({"instances": [[1, 2], 3]}, ROWS_OF_FOUR, "instances[1] has another shape"),
        ({"instances": [[1]]}, ROWS_OF_FOUR * 2, "single-input graph; 'g' has 2 inputs"),
    ],
)
def test_bad_v1_requests_name_the_field(document, inputs, fragment):
    with pytest.raises(RequestError) as error:
        v2_request(document, inputs, "g")
    assert fragment in str(error.value) and error.value.status == 400


def test_deeply_nested_rows_are_refused_without_recursing_forever():
    rows: list = [1.0]
    for _ in range(500):
        rows = [rows]
    with pytest.raises(RequestError, match="nested deeper than 16 levels"):
        v2_request({"instances": rows}, ROWS_OF_FOUR, "g")


def test_predictions_are_the_rows_of_the_first_output():
    outputs = [
        {"name": "p", "datatype": "FP32", "shape": [2, 3], "data": [0.1, 0.2, 0.7, 0.5, 0.4, 0.1]},
        {"name": "label", "datatype": "INT64", "shape": [2], "data": [2, 0]},
    ]
    assert predictions(outputs) == [[0.1, 0.2, 0.7], [0.5, 0.4, 0.1]]
    assert predictions(outputs[1:]) == [2, 0]
    cube = {"name": "c", "datatype": "INT64", "shape": [2, 1, 2], "data": [1, 2, 3, 4]}
    assert predictions([cube]) == [[[1, 2]], [[3, 4]]]
    assert predictions([]) == []
