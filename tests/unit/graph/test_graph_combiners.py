"""Combiners against outputs computed by hand."""

from __future__ import annotations

import pytest
from graph_fakes import tensor

from mlserving.router.graph.combiners import combine, renormalised, select_outputs, stack_input
from mlserving.router.graph.model import CombinerType
from mlserving.router.graph.tensors import TensorError

A = tensor("p", [0.2, 0.6, 1.0, 0.0], [2, 2])
B = tensor("p", [0.4, 0.2, 0.0, 1.0], [2, 2])
C = tensor("p", [0.6, 0.1, 0.5, 0.5], [2, 2])


def data(result):
    return [round(x, 9) for x in result["data"]]


def test_mean():
    result = combine(CombinerType.MEAN, "p", [A, B, C])
    assert data(result) == [0.4, 0.3, 0.5, 0.5]
    assert result["shape"] == [2, 2] and result["datatype"] == "FP64" and result["name"] == "p"


def test_weighted_mean():
    # (1*0.2 + 2*0.4 + 1*0.6) / 4 = 0.4 ; (0.6 + 0.4 + 0.1) / 4 = 0.275 ; (1 + 0 + 0.5) / 4 = 0.375 ; (0 + 2 + 0.5) / 4
    result = combine(CombinerType.WEIGHTED_MEAN, "p", [A, B, C], weights=[1, 2, 1])
    assert data(result) == [0.4, 0.275, 0.375, 0.625]


def test_linear_adds_the_bias():
    # 0.5*a - 1*b + 2*c + 0.1
    result = combine(CombinerType.LINEAR, "p", [A, B, C], weights=[0.5, -1, 2], bias=0.1)
    # row 0: 0.1 - 0.4 + 1.2 + 0.1 ; 0.3 - 0.2 + 0.2 + 0.1 ; row 1: 0.5 - 0 + 1.0 + 0.1 ; 0 - 1 + 1 + 0.1
    assert data(result) == [1.0, 0.4, 1.6, 0.1]


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        (CombinerType.SUM, [1.2, 0.9, 1.5, 1.5]),
        (CombinerType.MAX, [0.6, 0.6, 1.0, 1.0]),
        (CombinerType.MIN, [0.2, 0.1, 0.0, 0.0]),
    ],
)
def test_elementwise(kind, expected):
    assert data(combine(kind, "p", [A, B, C])) == expected


def test_vote_is_a_majority_per_row_with_ties_to_the_lowest_label():
    labels = [
        tensor("label", [1, 0, 2, 7], datatype="INT64"),
        tensor("label", [1, 2, 0, 5], datatype="INT64"),
        tensor("label", [0, 2, 1, 9], datatype="INT64"),
    ]
    result = combine(CombinerType.VOTE, "label", labels)
    # row 0: 1 twice; row 1: 2 twice; row 2: a three-way tie -> 0; row 3: tie -> 5
    assert result["data"] == [1, 2, 0, 5] and result["datatype"] == "INT64"


def test_vote_on_string_labels():
    labels = [
        tensor("label", ["cat", "dog"], datatype="BYTES"),
        tensor("label", ["dog", "dog"], datatype="BYTES"),
    ]
    assert combine(CombinerType.VOTE, "label", labels)["data"] == ["cat", "dog"]


def test_datatypes_of_the_result():
    f32 = [tensor("v", [1.0, 2.0], datatype="FP32"), tensor("v", [3.0, 4.0], datatype="FP32")]
    assert combine(CombinerType.MEAN, "v", f32)["datatype"] == "FP32"
    ints = [tensor("v", [1, 2], datatype="INT32"), tensor("v", [3, 4], datatype="INT64")]
    assert combine(CombinerType.SUM, "v", ints) == tensor("v", [4, 6], datatype="INT64")
    assert combine(CombinerType.MEAN, "v", ints) == tensor("v", [2.0, 3.0], datatype="FP64")
    flags = [tensor("v", [True, False], datatype="BOOL"), tensor("v", [True, True], datatype="BOOL")]
    assert combine(CombinerType.SUM, "v", flags) == tensor("v", [2, 1], datatype="INT64")


def test_nested_data_is_read_row_major():
    nested = {"name": "p", "datatype": "FP64", "shape": [2, 2], "data": [[0.4, 0.2], [0.0, 1.0]]}
    assert data(combine(CombinerType.MEAN, "p", [A, nested])) == [0.3, 0.4, 0.5, 0.5]


def test_mismatched_or_unfit_tensors_are_refused():
    with pytest.raises(TensorError, match=r"shapes differ between children: \[2, 2\] and \[4\]"):
        combine(CombinerType.MEAN, "p", [A, tensor("p", [1, 2, 3, 4])])
    with pytest.raises(TensorError, match="mean needs numbers"):
        combine(CombinerType.MEAN, "l", [tensor("l", ["a"], datatype="BYTES")] * 2)
    with pytest.raises(TensorError, match=r"shape \[3\] needs 3 values, data has 2"):
        combine(CombinerType.MAX, "p", [tensor("p", [1, 2], [3])] * 2)


def test_renormalised_weights_after_a_skip():
    # weightedMean divides by the weights it uses, so the remaining weights are enough.
    assert renormalised(CombinerType.WEIGHTED_MEAN, [1, 2, 1], [0, 2]) == [1, 1]
    # linear keeps the total magnitude: |1|+|2|+|-1| = 4 over |1|+|-1| = 2 -> times 2.
    assert renormalised(CombinerType.LINEAR, [1, 2, -1], [0, 2]) == [2, -2]
    assert renormalised(CombinerType.LINEAR, [1, 2, -1], [0, 1, 2]) == [1, 2, -1]


def test_select_outputs():
    one = [tensor("label", [1]), tensor("probabilities", [0.1, 0.9], [1, 2])]
    two = [tensor("probabilities", [0.3, 0.7], [1, 2]), tensor("label", [1])]
    assert [name for name, _ in select_outputs("e", ["a", "b"], [one, two], None)] == [
        "label",
        "probabilities",
    ]
    picked = select_outputs("e", ["a", "b"], [one, two], "probabilities")
    assert picked == [("probabilities", [one[1], two[0]])]
    singles = select_outputs("e", ["a", "b"], [[tensor("x", [1])], [tensor("y", [2])]], None)
    assert singles == [("e", [tensor("x", [1]), tensor("y", [2])])]
    with pytest.raises(TensorError, match="child 'b' answered no output 'score'"):
        select_outputs("e", ["a", "b"], [[tensor("score", [1])], [tensor("y", [2])]], "score")
    with pytest.raises(TensorError, match="no output name in common"):
        select_outputs("e", ["a", "b"], [one, [tensor("x", [1]), tensor("y", [1])]], None)


def test_stack_input_puts_the_children_side_by_side_per_row():
    a = [tensor("p", [0.1, 0.9, 0.8, 0.2], [2, 2])]
    b = [tensor("p", [0.3, 0.7, 0.6, 0.4], [2, 2])]
    selected = select_outputs("e", ["a", "b"], [a, b], None)
    stacked = stack_input("input", selected, ["a", "b"])
    assert stacked == {
        "name": "input",
        "datatype": "FP64",
        "shape": [2, 4],
        "data": [0.1, 0.9, 0.3, 0.7, 0.8, 0.2, 0.6, 0.4],
    }
