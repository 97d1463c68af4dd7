"""The executor end to end over fake components: V2 in, V2 out, values computed by hand."""

from __future__ import annotations

import asyncio
import time

import orjson
import pytest
from graph_fakes import (
    Components,
    compiled,
    fixed,
    infer,
    model_node,
    output,
    sample_value,
    tensor,
    weighted_row_sum,
)
from prometheus_client import CollectorRegistry

from mlserving.router.graph.executor import run_graph

X = tensor("input", [1.0, 2.0, 3.0, 4.0], [2, 2])  # row sums 3 and 7


def ensemble(combiner, *children, **extra):
    return {
        "root": "e",
        "nodes": [
            *(model_node(c) for c in children),
            {"name": "e", "type": "Ensemble", "children": list(children), "combiner": combiner},
        ],
        **extra,
    }


@pytest.mark.parametrize(
    ("combiner", "expected"),
    [
        ({"type": "mean"}, [(1 + 2 + 4) * 3 / 3, (1 + 2 + 4) * 7 / 3]),
        ({"type": "weightedMean", "weights": [1, 1, 2]}, [(3 + 6 + 24) / 4, (7 + 14 + 56) / 4]),
        ({"type": "linear", "weights": [1, -1, 0.5], "bias": 10}, [3 - 6 + 6 + 10, 7 - 14 + 14 + 10]),
        ({"type": "sum"}, [21, 49]),
        ({"type": "max"}, [12, 28]),
        ({"type": "min"}, [3, 7]),
    ],
)
async def test_ensemble_combines_the_children(combiner, expected):
    components = Components()
    for name, weight in (("a", 1), ("b", 2), ("c", 4)):
        components.add(name, weighted_row_sum(weight))
    status, body, _ = await infer(compiled(ensemble(combiner, "a", "b", "c")), components, X)
    assert status == 200, body
    assert output(body, "value")["data"] == pytest.approx(expected)
    assert output(body, "value")["shape"] == [2]
    # Every child got the graph's inputs unchanged.
    for name in "abc":
        assert components.requests_to(name) == [{"inputs": [X]}]


async def test_vote_ensemble_answers_the_majority_label():
    components = Components()
    components.add("a", fixed(tensor("label", [1, 0], datatype="INT64")))
    components.add("b", fixed(tensor("label", [1, 2], datatype="INT64")))
    components.add("c", fixed(tensor("label", [0, 2], datatype="INT64")))
    status, body, _ = await infer(compiled(ensemble({"type": "vote"}, "a", "b", "c")), components, X)
    assert status == 200 and output(body) == tensor("label", [1, 2], datatype="INT64")


async def test_sequence_feeds_outputs_to_the_next_node_with_a_mapping():
    components = Components()
    components.add("scale", weighted_row_sum(2, name="scaled"))  # [6, 14]
    components.add("score", lambda inputs: [tensor("score", [v + 1 for v in inputs[0]["data"]])])
    graph = compiled(
        {
            "root": "s",
            "nodes": [
                model_node("scale"),
                model_node("score"),
                {
                    "name": "s",
                    "type": "Sequence",
                    "children": ["scale", "score"],
                    "mappings": [{"scaled": "input"}],
                },
            ],
        }
    )
    status, body, _ = await infer(graph, components, X)
    assert status == 200
    assert output(body) == tensor("score", [7.0, 15.0])
    assert components.requests_to("score") == [{"inputs": [tensor("input", [6.0, 14.0])]}]


async def test_sequence_without_mapping_passes_every_output_on():
    components = Components()
    components.add("one", fixed(tensor("x", [1.0]), tensor("y", [2.0])))
    components.add("two", lambda inputs: [tensor("names", [t["name"] for t in inputs], datatype="BYTES")])
    graph = compiled(
        {
            "root": "s",
            "nodes": [
                model_node("one"),
                model_node("two"),
                {"name": "s", "type": "Sequence", "children": ["one", "two"]},
            ],
        }
    )
    status, body, _ = await infer(graph, components, X)
    assert status == 200 and output(body)["data"] == ["x", "y"]


async def test_sequence_mapping_an_output_the_node_does_not_answer_fails_naming_it():
    components = Components()
    components.add("one", fixed(tensor("x", [1.0])))
    components.add("two", fixed(tensor("z", [1.0])))
    graph = compiled(
        {
            "root": "s",
            "nodes": [
                model_node("one"),
                model_node("two"),
                {
                    "name": "s",
                    "type": "Sequence",
                    "children": ["one", "two"],
                    "mappings": [{"value": "input"}],
                },
            ],
        }
    )
    status, body, _ = await infer(graph, components, X)
    assert status == 502
    assert body["node"] == "s"
    assert "mappings.0: 'one' answered no output 'value' for 'two' (outputs: x)" in body["error"]
    assert components.requests_to("two") == []


async def test_stack_feeds_the_children_outputs_to_the_meta_model():
    components = Components()
    components.add("a", fixed(tensor("probabilities", [0.1, 0.9, 0.8, 0.2], [2, 2])))
    components.add("b", fixed(tensor("probabilities", [0.3, 0.7, 0.6, 0.4], [2, 2])))
    components.add(
        "meta",
        lambda inputs: [
            tensor(
                "label",
                [int(sum(r) > 2) for r in (inputs[0]["data"][:4], inputs[0]["data"][4:])],
                datatype="INT64",
            )
        ],
    )
    document = ensemble({"type": "stack", "node": "meta", "input": "input"}, "a", "b")
    document["nodes"].insert(0, model_node("meta"))
    status, body, _ = await infer(compiled(document), components, X)
    assert status == 200
    assert components.requests_to("meta") == [
        {
            "inputs": [
                {
                    "name": "input",
                    "datatype": "FP64",
                    "shape": [2, 4],
                    "data": [0.1, 0.9, 0.3, 0.7, 0.8, 0.2, 0.6, 0.4],
                }
            ]
        }
    ]
    assert output(body) == tensor("label", [0, 0], datatype="INT64")
    assert set(body["parameters"]["graph"]["components"]) == {"a", "b", "meta"}


async def test_ensemble_children_run_concurrently_within_the_fan_out_limit():
    components = Components()
    names = [f"m{i}" for i in range(6)]
    for name in names:
        components.add(name, weighted_row_sum(1), delay=0.1)
    graph = compiled(ensemble({"type": "mean"}, *names, maxConcurrency=3))
    started = time.perf_counter()
    status, body, _ = await infer(graph, components, X)
    elapsed = time.perf_counter() - started
    assert status == 200, body
    assert components.max_in_flight == 3
    assert 0.2 <= elapsed < 0.35  # two waves of three, not six calls one after the other

    unbounded = compiled(ensemble({"type": "mean"}, *names))
    components.max_in_flight = 0
    started = time.perf_counter()
    await infer(unbounded, components, X)
    assert components.max_in_flight == 6 and time.perf_counter() - started < 0.2


async def test_the_response_names_each_component_variant_and_id():
    components = Components()
    components.add("a", weighted_row_sum(1), variant="canary")
    components.add("b", weighted_row_sum(1), variant="stable")
    status, body, _ = await infer(
        compiled(ensemble({"type": "mean"}, "a", "b")), components, X, response_id="graph-id-1"
    )
    assert status == 200
    assert body["id"] == "graph-id-1" and body["model_name"] == "g"
    assert body["parameters"]["graph"]["components"] == {
        "a": {"model": "a", "variant": "canary", "id": "a-1"},
        "b": {"model": "b", "variant": "stable", "id": "b-2"},
    }
    assert "skipped" not in body["parameters"]["graph"]


async def test_client_headers_and_parameters_reach_the_components():
    components = Components()
    components.add("a", weighted_row_sum(1))
    graph = compiled({"root": "a", "nodes": [model_node("a")]})
    headers = [
        (b"x-user-id", b"u-42"),
        (b"connection", b"keep-alive"),
        (b"content-length", b"99"),
        (b"x-mlrollouts-id", b"forged"),
    ]
    body = orjson.dumps({"id": "client-1", "inputs": [X], "parameters": {"customer": "c-7"}})
    status, answer, _ = await run_graph(graph, body, components, headers=headers)
    assert status == 200 and orjson.loads(answer)["id"] == "client-1"
    call = components.calls[0]
    assert call["path"] == "/v2/models/a/infer"
    assert call["headers"] == [(b"x-user-id", b"u-42"), (b"content-type", b"application/json")]
    assert call["request"] == {"inputs": [X], "parameters": {"customer": "c-7"}}
    assert 29 < call["timeout"] <= 30  # what is left of the graph's default 30 s


async def test_requested_outputs_are_picked():
    components = Components()
    components.add(
        "a", fixed(tensor("label", [1], datatype="INT64"), tensor("probabilities", [0.2, 0.8], [1, 2]))
    )
    graph = compiled({"root": "a", "nodes": [model_node("a")]})
    status, body, _ = await run_graph(
        graph, orjson.dumps({"inputs": [X], "outputs": [{"name": "probabilities"}]}), components
    )
    assert status == 200 and [t["name"] for t in orjson.loads(body)["outputs"]] == ["probabilities"]
    status, body, _ = await run_graph(
        graph, orjson.dumps({"inputs": [X], "outputs": [{"name": "nope"}]}), components
    )
    assert (
        status == 400
        and "outputs[0].name 'nope' is not an output of graph 'g'" in orjson.loads(body)["error"]
    )


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"{not json", "request body is not valid JSON"),
        (b"[1, 2]", "request body must be a JSON object"),
        (b"{}", "'inputs' must be a non-empty array"),
        (b'{"inputs": [7]}', "inputs[0] must be an object"),
        (
            b'{"inputs": [{"datatype": "FP64", "shape": [1], "data": [1]}]}',
            "inputs[0].name must be a non-empty string",
        ),
        (
            b'{"inputs": [{"name": "x", "datatype": "FP64", "shape": [-1], "data": [1]}]}',
            "inputs[0].shape must be an array of non-negative integers",
        ),
        (
            b'{"inputs": [{"name": "x", "datatype": "FP64", "shape": [3], "data": [1]}]}',
            "inputs[0]: shape [3] needs 3 values, data has 1",
        ),
        (
            b'{"inputs": [{"name": "x", "datatype": "FP64", "shape": [1], "data": 1}]}',
            "inputs[0].data must be an array",
        ),
        (
            b'{"inputs": [{"name": "x", "datatype": "FP64", "shape": [1], "data": [1]}, {"name": "x", "datatype": "FP64", "shape": [1], "data": [1]}]}',
            "inputs[1].name 'x' appears more than once",
        ),
        (
            b'{"inputs": [{"name": "x", "datatype": "FP64", "shape": [1], "parameters": {"binary_data_size": 8}}]}',
            "binary tensor data is not supported",
        ),
        (
            b'{"id": 5, "inputs": [{"name": "x", "datatype": "FP64", "shape": [1], "data": [1]}]}',
            "'id' must be a string",
        ),
    ],
)
async def test_malformed_requests_get_400_naming_the_field(body, expected):
    components = Components()
    components.add("a", weighted_row_sum(1))
    registry = CollectorRegistry()
    graph = compiled({"root": "a", "nodes": [model_node("a")]}, registry=registry)
    status, answer, _ = await run_graph(graph, body, components)
    assert status == 400
    assert expected in orjson.loads(answer)["error"]
    assert components.calls == []
    assert sample_value(registry, "mlgraph_requests_total", graph="g", code="400") == 1


async def test_metrics_per_graph_and_per_node():
    registry = CollectorRegistry()
    components = Components()
    components.add("a", weighted_row_sum(1))
    components.add("b", weighted_row_sum(1), status=500, body=b'{"error": "boom"}')
    document = ensemble({"type": "mean"}, "a", "b")
    document["nodes"][1]["onError"] = "Skip"
    graph = compiled(document, name="credit", registry=registry)
    for _ in range(3):
        status, _, _ = await infer(graph, components, X)
        assert status == 200
    assert sample_value(registry, "mlgraph_requests_total", graph="credit", code="200") == 3
    assert sample_value(registry, "mlgraph_request_duration_seconds_count", graph="credit") == 3
    assert sample_value(registry, "mlgraph_node_requests_total", graph="credit", node="a", code="200") == 3
    assert sample_value(registry, "mlgraph_node_requests_total", graph="credit", node="b", code="502") == 3
    assert sample_value(registry, "mlgraph_node_requests_total", graph="credit", node="e", code="200") == 3
    assert sample_value(registry, "mlgraph_node_duration_seconds_count", graph="credit", node="b") == 3


async def test_a_graph_serves_concurrent_requests_independently():
    components = Components()
    components.add("a", weighted_row_sum(1), delay=0.01)
    components.add("b", weighted_row_sum(3), delay=0.01)
    graph = compiled(ensemble({"type": "sum"}, "a", "b"))
    requests = [tensor("input", [float(i)], [1, 1]) for i in range(20)]
    results = await asyncio.gather(*(infer(graph, components, x) for x in requests))
    assert [output(body)["data"] for _, body, _ in results] == [[4.0 * i] for i in range(20)]
