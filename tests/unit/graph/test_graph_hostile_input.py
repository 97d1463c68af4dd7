"""Requests and component answers built to break the graph get an answer naming the culprit, never a crash."""

from __future__ import annotations

import orjson
import pytest
from graph_fakes import Components, compiled, infer, model_node, tensor, weighted_row_sum

from mlserving.router.graph.events import EventPublisher
from mlserving.router.graph.executor import run_graph
from mlserving.router.graph.model import Events


def nested(depth: int) -> list:
    data: list = [1.0, 2.0]
    for _ in range(depth - 1):
        data = [data]
    return data


def switch_graph():
    return compiled(
        {
            "root": "s",
            "nodes": [
                model_node("a"),
                model_node("b", onError="Default", defaultOutputs=[{"name": "value", "value": 0.0}]),
                {
                    "name": "s",
                    "type": "Switch",
                    "cases": [{"when": {"feature": 0, "op": "gt", "value": 0}, "node": "a"}],
                    "default": "b",
                },
            ],
        }
    )


def components():
    fakes = Components()
    fakes.add("a", weighted_row_sum(1))
    fakes.add("b", weighted_row_sum(2), status=400, body=b'{"error": "bad input"}')
    return fakes


@pytest.mark.parametrize(
    ("data", "shape", "fragment"),
    [
        (nested(40), [1, 2], "inputs[0].data is nested deeper than 32 levels"),
        ([[1.0, 2.0]], [10**12, 2], "shape [1000000000000, 2] needs 2000000000000 values, data has 2"),
        ([], [10**9, 0], "has 1000000000 rows but no values in them"),
    ],
)
async def test_malformed_tensors_are_refused_before_any_component_is_called(data, shape, fragment):
    fakes = components()
    status, body, _ = await infer(switch_graph(), fakes, tensor("input", data, shape))
    assert status == 400 and fragment in body["error"], body
    assert fakes.calls == []


@pytest.mark.parametrize("element", [None, {"x": 1}, "text"])
async def test_a_switch_on_an_element_that_is_no_number_names_the_case(element):
    fakes = components()
    status, body, _ = await infer(switch_graph(), fakes, tensor("input", [element, 1.0], [1, 2]))
    assert status == 400 and body["node"] == "s" and "cases.0: compares" in body["error"], body


async def test_flat_data_hiding_deep_lists_is_refused_by_the_node_that_would_send_it():
    graph = compiled({"root": "a", "nodes": [model_node("a")]})
    # Passed decoded: no JSON encoder would write this request, but a decoder reads it.
    request = {"inputs": [tensor("input", [1.0, nested(300)], [2])]}
    status, raw, _ = await run_graph(graph, request, components())
    body = orjson.loads(raw)
    assert status == 400 and body["node"] == "a" and "the inputs cannot be sent to 'a'" in body["error"]


async def test_an_ensemble_of_answers_that_are_no_numbers_fails_with_502_naming_it():
    fakes = Components()
    fakes.add("a", weighted_row_sum(1))
    fakes.add("b", lambda inputs: [tensor("value", ["high", "low"])])
    graph = compiled(
        {
            "root": "e",
            "nodes": [
                model_node("a"),
                model_node("b"),
                {"name": "e", "type": "Ensemble", "children": ["a", "b"]},
            ],
        }
    )
    status, body, _ = await infer(graph, fakes, tensor("input", [1.0, 2.0, 3.0, 4.0], [2, 2]))
    assert status == 502 and body["node"] == "e" and "cannot combine" in body["error"], body


async def test_an_event_filter_skips_nulls_and_junk_in_the_outputs():
    publisher = EventPublisher("g", Events(sink="http://sink.invalid:9", filter={"op": "gt", "value": 0.5}))
    try:
        junk = [None, {"x": 1}, "text", 0.2]
        assert publisher.submit({"outputs": [tensor("value", junk)]}, []) is False
        assert publisher.submit({"outputs": [tensor("value", [*junk, 0.9])]}, []) is True
        assert publisher.submit({"outputs": [tensor("value", nested(40), [1, 2])]}, []) is False
    finally:
        await publisher.stop(drain_seconds=0)


async def test_a_graph_answering_null_outputs_still_answers_with_events_filtered():
    fakes = Components()
    fakes.add("a", lambda inputs: [tensor("value", [None])])
    spec = {
        "root": "a",
        "nodes": [model_node("a")],
        "events": {"sink": "http://sink.invalid:9", "filter": {"op": "gt", "value": 0}},
    }
    graph = compiled(spec)
    try:
        status, body, _ = await run_graph(graph, orjson.dumps({"inputs": [tensor("input", [1.0])]}), fakes)
        assert status == 200 and orjson.loads(body)["outputs"][0]["data"] == [None]
    finally:
        await graph.events.stop(drain_seconds=0)
