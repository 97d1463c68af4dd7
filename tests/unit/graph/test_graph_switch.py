"""Switch: the first case that holds picks the node, row by row; else the default."""

from __future__ import annotations

import pytest
from graph_fakes import Components, compiled, infer, model_node, output, tensor


def tagging(tag: float):
    """Answers `tag` for every row, so the output shows which branch served each row."""
    return lambda inputs: [tensor("branch", [tag] * inputs[0]["shape"][0])]


def switch_graph(cases, default="other"):
    nodes = [model_node("low"), model_node("high"), model_node("other")]
    switch = {"name": "w", "type": "Switch", "cases": cases}
    if default is not None:
        switch["default"] = default
    return compiled({"root": "w", "nodes": [*nodes, switch]})


def branches():
    components = Components()
    for tag, name in enumerate(("low", "high", "other"), start=1):
        components.add(name, tagging(float(tag)))
    return components


ROW = [[5.0, 250.0]]  # feature 0 = 5, feature 1 = 250


@pytest.mark.parametrize(
    ("op", "value", "expected"),
    [
        ("eq", 250, 1.0),
        ("eq", 251, 3.0),
        ("ne", 251, 1.0),
        ("ne", 250, 3.0),
        ("lt", 251, 1.0),
        ("lt", 250, 3.0),
        ("le", 250, 1.0),
        ("le", 249, 3.0),
        ("gt", 249, 1.0),
        ("gt", 250, 3.0),
        ("ge", 250, 1.0),
        ("ge", 251, 3.0),
    ],
)
async def test_every_operator(op, value, expected):
    graph = switch_graph([{"when": {"input": "x", "feature": 1, "op": op, "value": value}, "node": "low"}])
    status, body, _ = await infer(graph, branches(), tensor("x", ROW[0], [1, 2]))
    assert status == 200, body
    assert output(body)["data"] == [expected]


async def test_the_first_matching_case_wins():
    graph = switch_graph(
        [
            {"when": {"feature": 1, "op": "gt", "value": 100}, "node": "high"},
            {"when": {"feature": 1, "op": "gt", "value": 10}, "node": "low"},
        ]
    )
    components = branches()
    status, body, _ = await infer(graph, components, tensor("x", ROW[0], [1, 2]))
    assert status == 200 and output(body)["data"] == [2.0]
    assert components.requests_to("low") == [] and len(components.requests_to("high")) == 1


async def test_rows_of_a_batch_go_to_their_own_branch_and_come_back_in_order():
    graph = switch_graph(
        [
            {"when": {"feature": 0, "op": "lt", "value": 10}, "node": "low"},
            {"when": {"feature": 0, "op": "lt", "value": 100}, "node": "high"},
        ]
    )
    components = branches()
    x = tensor("x", [50.0, 0.5, 1.0, 1.5, 500.0, 5.0, 20.0, 2.5], [4, 2])
    status, body, _ = await infer(graph, components, x)
    assert status == 200, body
    assert output(body) == {"name": "branch", "datatype": "FP64", "shape": [4], "data": [2.0, 1.0, 3.0, 2.0]}
    # Each branch received only its rows, in their original order.
    assert components.requests_to("low") == [{"inputs": [tensor("x", [1.0, 1.5], [1, 2])]}]
    assert components.requests_to("high") == [{"inputs": [tensor("x", [50.0, 0.5, 20.0, 2.5], [2, 2])]}]
    assert components.requests_to("other") == [{"inputs": [tensor("x", [500.0, 5.0], [1, 2])]}]


async def test_a_batch_for_one_branch_is_passed_whole():
    graph = switch_graph([{"when": {"feature": 0, "op": "gt", "value": 0}, "node": "low"}])
    components = branches()
    x = tensor("x", [1.0, 2.0, 3.0, 4.0], [2, 2])
    status, _, _ = await infer(graph, components, x)
    assert status == 200 and components.requests_to("low") == [{"inputs": [x]}]


async def test_string_features():
    graph = switch_graph([{"when": {"input": "country", "op": "eq", "value": "FR"}, "node": "high"}])
    components = branches()
    status, body, _ = await infer(
        graph, components, tensor("x", [1.0, 2.0], [2, 1]), tensor("country", ["FR", "DE"], datatype="BYTES")
    )
    assert status == 200 and output(body)["data"] == [2.0, 3.0]
    assert components.requests_to("high") == [
        {"inputs": [tensor("x", [1.0], [1, 1]), tensor("country", ["FR"], [1], datatype="BYTES")]}
    ]


@pytest.mark.parametrize(
    ("case", "default", "expected"),
    [
        ({"feature": 0, "op": "gt", "value": 1000}, None, "row 0 matches no case and there is no default"),
        (
            {"feature": 2, "op": "gt", "value": 0},
            "other",
            "cases.0.when.feature 2 is out of range: input 'x' has 2 per row",
        ),
        (
            {"input": "ghost", "op": "gt", "value": 0},
            "other",
            "cases.0.when.input 'ghost' is not an input (inputs: x)",
        ),
        ({"op": "eq", "value": "FR"}, "other", "cases.0: compares 5.0 (row 0) with 'FR'"),
    ],
)
async def test_inputs_the_switch_cannot_route_get_400_naming_the_switch(case, default, expected):
    graph = switch_graph([{"when": case, "node": "low"}], default=default)
    components = branches()
    status, body, _ = await infer(graph, components, tensor("x", ROW[0], [1, 2]))
    assert status == 400
    assert body["node"] == "w" and expected in body["error"]
    assert components.calls == []


async def test_branches_that_answer_different_outputs_cannot_be_merged():
    graph = switch_graph([{"when": {"feature": 0, "op": "lt", "value": 10}, "node": "low"}])
    components = branches()
    components.add("other", lambda inputs: [tensor("something-else", [0.0] * inputs[0]["shape"][0])])
    status, body, _ = await infer(graph, components, tensor("x", [1.0, 2.0, 30.0, 40.0], [2, 2]))
    assert status == 502
    assert body["node"] == "w" and "'other' answered no output 'branch'" in body["error"]
