"""The graph's metadata and readiness, derived from its components' (pure, then fetched and cached)."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest
from graph_fakes import compiled, model_node
from http_servers import ModelServer, closed_port

from mlserving.router.graph import Graph
from mlserving.router.graph.calls import pooled_fetch
from mlserving.router.graph.executor import ComponentUnavailable
from mlserving.router.graph.metadata import (
    PLATFORM,
    GraphDescriptions,
    NodeProblem,
    component_metadata,
    describe,
    hard_model_nodes,
    reachable_model_nodes,
    readiness,
)
from mlserving.router.graph.model import ModelNode
from mlserving.router.upstream import UpstreamPool


def meta(name: str, inputs: list[tuple[str, str, list[int]]], outputs: list[tuple[str, str, list[int]]]):
    def tensors(specs):
        return [{"name": n, "datatype": d, "shape": s} for n, d, s in specs]

    return {"name": name, "platform": "onnx", "inputs": tensors(inputs), "outputs": tensors(outputs)}


X = [("input", "FP32", [-1, 4])]


def spec(root: str, *nodes: dict[str, Any]) -> Graph:
    return Graph.model_validate({"root": root, "nodes": list(nodes)})


def ensemble(name: str, children: list[str], **combiner: Any) -> dict[str, Any]:
    return {"name": name, "type": "Ensemble", "children": children, "combiner": combiner or {"type": "mean"}}


def test_an_ensemble_answers_the_combined_tensors_typed_as_the_combiner_answers_them():
    graph = spec("e", model_node("a"), model_node("b"), ensemble("e", ["a", "b"]))
    found = {
        "a": meta("a", X, [("score", "FP32", [-1]), ("label", "INT64", [-1])]),
        "b": meta("b", X, [("score", "FP32", [-1])]),
    }
    described = describe(graph, "credit-score", "credit", found)
    assert described == {
        "name": "credit-score",
        "platform": PLATFORM,
        "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, 4]}],
        "outputs": [{"name": "score", "datatype": "FP32", "shape": [-1]}],  # the one name both answer
        "properties": {"route": "credit", "root": "e"},
    }
    found["b"] = meta("b", X, [("score", "FP64", [-1])])
    assert describe(graph, "m", "r", found)["outputs"][0]["datatype"] == "FP64"


@pytest.mark.parametrize(
    ("combiner", "outputs", "expected"),
    [
        ({"type": "sum"}, [("ok", "BOOL", [-1]), ("ok", "BOOL", [-1])], [("ok", "INT64")]),
        ({"type": "max"}, [("v", "INT32", [-1]), ("v", "INT64", [-1])], [("v", "INT64")]),
        ({"type": "vote"}, [("label", "BYTES", [-1]), ("label", "BYTES", [-1])], [("label", "BYTES")]),
        ({"type": "mean"}, [("p", "FP32", [-1]), ("q", "FP16", [-1])], [("e", "FP32")]),
        ({"type": "linear", "weights": [1, 2]}, [("p", "INT64", [-1]), ("p", "FP32", [-1])], [("p", "FP64")]),
    ],
)
def test_combined_output_names_and_datatypes(combiner, outputs, expected):
    graph = spec("e", model_node("a"), model_node("b"), ensemble("e", ["a", "b"], **combiner))
    found = {name: meta(name, X, [out]) for name, out in zip("ab", outputs, strict=True)}
    described = describe(graph, "m", "r", found)["outputs"]
    assert [(t["name"], t["datatype"]) for t in described] == expected


def test_combiner_output_picks_one_tensor_and_a_missing_one_names_the_ensemble():
    graph = spec("e", model_node("a"), model_node("b"), ensemble("e", ["a", "b"], type="mean", output="p"))
    found = {
        "a": meta("a", X, [("label", "INT64", [-1]), ("p", "FP32", [-1, 3])]),
        "b": meta("b", X, [("p", "FP32", [-1, 3])]),
    }
    assert describe(graph, "m", "r", found)["outputs"] == [
        {"name": "p", "datatype": "FP32", "shape": [-1, 3]}
    ]
    found["b"] = meta("b", X, [("q", "FP32", [-1, 3])])
    with pytest.raises(NodeProblem) as problem:
        describe(graph, "m", "r", found)
    assert problem.value.node == "e" and problem.value.status == 502 and "no output 'p'" in str(problem.value)


def test_a_sequence_takes_the_first_childs_inputs_and_the_last_childs_outputs():
    graph = spec(
        "s",
        model_node("scaler"),
        model_node("model"),
        {"name": "s", "type": "Sequence", "children": ["scaler", "model"], "mappings": [{"scaled": "input"}]},
    )
    found = {
        "scaler": meta("scaler", [("raw", "FP64", [-1, 2])], [("scaled", "FP32", [-1, 4])]),
        "model": meta("model", X, [("value", "FP32", [-1])]),
    }
    described = describe(graph, "m", "r", found)
    assert described["inputs"] == [{"name": "raw", "datatype": "FP64", "shape": [-1, 2]}]
    assert described["outputs"] == [{"name": "value", "datatype": "FP32", "shape": [-1]}]


def test_a_switch_and_a_stack_describe_through_their_targets():
    switch = {
        "name": "entry",
        "type": "Switch",
        "cases": [{"when": {"feature": 0, "op": "gt", "value": 1}, "node": "st"}],
        "default": "c",
    }
    graph = spec(
        "entry",
        model_node("a"),
        model_node("b"),
        model_node("c"),
        model_node("meta"),
        ensemble("st", ["a", "b"], type="stack", node="meta"),
        switch,
    )
    found = {
        "a": meta("a", X, [("p", "FP32", [-1])]),
        "b": meta("b", X, [("p", "FP32", [-1])]),
        "c": meta("c", X, [("final", "FP64", [-1])]),
        "meta": meta("meta", [("input", "FP32", [-1, 2])], [("final", "FP64", [-1])]),
    }
    described = describe(graph, "m", "r", found)
    assert described["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 4]}]
    assert described["outputs"] == [{"name": "final", "datatype": "FP64", "shape": [-1]}]


def test_a_child_without_metadata_is_left_out_unless_no_child_answers():
    graph = spec("e", model_node("a", onError="Skip"), model_node("b"), ensemble("e", ["a", "b"]))
    down = NodeProblem("a", 503, "component 'a' is unavailable: refused")
    found: dict[str, Any] = {"a": down, "b": meta("b", X, [("score", "FP32", [-1])])}
    assert describe(graph, "m", "r", found)["outputs"][0]["name"] == "score"
    found["b"] = NodeProblem("b", 504, "component 'b' did not answer within 2 s")
    with pytest.raises(NodeProblem) as problem:
        describe(graph, "m", "r", found)
    assert problem.value is down
    with pytest.raises(NodeProblem, match="node 'a': the metadata of component 'a' was not fetched"):
        describe(graph, "m", "r", {})


@pytest.mark.parametrize(
    ("status", "body", "code", "fragment"),
    [
        (404, b'{"error": "no model"}', 503, "answered 404"),
        (500, b"boom", 502, "answered 500"),
        (200, b"<html>", 502, "invalid metadata"),
        (200, b'{"inputs": [], "outputs": [{"name": "x"}]}', 502, "'outputs' is not a list of tensors"),
        (200, b'{"outputs": []}', 502, "'inputs'"),
    ],
)
def test_component_metadata_errors_name_the_node(status, body, code, fragment):
    node = ModelNode(name="income", upstream="http://income:8080", model="credit-income")
    with pytest.raises(NodeProblem) as problem:
        component_metadata(node, status, body)
    assert (problem.value.node, problem.value.status) == ("income", code)
    assert fragment in str(problem.value) and "credit-income" in str(problem.value)


def soft_and_hard_graph() -> Graph:
    return spec(
        "s",
        model_node("a"),
        model_node("b", onError="Skip"),
        model_node("c", onError="Default", defaultOutputs=[{"name": "v", "value": 0}]),
        model_node("d"),
        model_node("unused"),
        {"name": "inner", "type": "Sequence", "children": ["d"], "onError": "Skip"},
        ensemble("e", ["a", "b", "inner"]),
        {"name": "s", "type": "Sequence", "children": ["e", "c"]},
    )


def test_hard_nodes_are_those_only_fail_nodes_lead_to():
    graph = soft_and_hard_graph()
    assert [n.name for n in reachable_model_nodes(graph)] == ["a", "b", "d", "c"]
    assert hard_model_nodes(graph) == {"a"}


def test_readiness_is_blocked_by_hard_nodes_only():
    graph = soft_and_hard_graph()
    down = NodeProblem("b", 503, "component 'b' is not ready (it answered 503)")
    ready, answer = readiness(graph, "m", {"a": None, "b": down, "c": None, "d": down})
    assert ready and answer == {
        "name": "m",
        "ready": True,
        "nodes": {"a": True, "b": False, "c": True, "d": False},
    }
    hard_down = NodeProblem("a", 504, "component 'a' did not answer within 2 s")
    ready, answer = readiness(graph, "m", {"a": hard_down, "b": None, "c": None, "d": None})
    assert not ready and answer["node"] == "a" and answer["error"] == str(hard_down)


class FakeComponents:
    """A ``Fetch`` over in-memory answers; counts the GETs it answers."""

    def __init__(self, answers: dict[str, tuple[int, Any]]) -> None:
        self.answers = answers
        self.gets: list[str] = []
        self.delay = 0.0

    async def __call__(self, upstream: str, path: str, timeout: float) -> tuple[int, bytes]:
        self.gets.append(path)
        await asyncio.sleep(self.delay)
        answer = self.answers[path]
        if isinstance(answer, Exception):
            raise answer
        status, document = answer
        return status, orjson.dumps(document)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def two_model_graph():
    return compiled({"root": "e", "nodes": [model_node("a"), model_node("b"), ensemble("e", ["a", "b"])]})


async def test_a_description_is_cached_for_its_ttl_and_a_failure_is_not():
    components = FakeComponents(
        {
            "/v2/models/a": (200, meta("a", X, [("score", "FP32", [-1])])),
            "/v2/models/b": (503, {"error": "loading"}),
        }
    )
    clock = Clock()
    descriptions = GraphDescriptions(components, ttl_seconds=30, clock=clock)
    graph = two_model_graph()
    # b is a hard child, but a's metadata suffices to describe the ensemble's tensors.
    first = await descriptions.metadata(graph)
    assert first["outputs"] == [{"name": "score", "datatype": "FP32", "shape": [-1]}]
    assert await descriptions.metadata(graph) is first and len(components.gets) == 2
    clock.now += 31
    await descriptions.metadata(graph)
    assert len(components.gets) == 4

    components.answers["/v2/models/a"] = ComponentUnavailable("refused")
    clock.now += 31
    for _ in range(2):
        with pytest.raises(NodeProblem) as problem:
            await descriptions.metadata(graph)
        assert problem.value.node == "a" and problem.value.status == 503
    assert len(components.gets) == 8  # each failed attempt asked again


async def test_concurrent_callers_share_one_round_of_fetches():
    components = FakeComponents(
        {
            "/v2/models/a": (200, meta("a", X, [("score", "FP32", [-1])])),
            "/v2/models/b": (200, meta("b", X, [("score", "FP32", [-1])])),
        }
    )
    components.delay = 0.05
    descriptions = GraphDescriptions(components)
    graph = two_model_graph()
    results = await asyncio.gather(*(descriptions.metadata(graph) for _ in range(5)))
    assert all(r is results[0] for r in results) and sorted(components.gets) == [
        "/v2/models/a",
        "/v2/models/b",
    ]


async def test_readiness_asks_every_component_and_maps_timeouts():
    components = FakeComponents(
        {"/v2/models/a/ready": (200, {"ready": True}), "/v2/models/b/ready": TimeoutError()}
    )
    descriptions = GraphDescriptions(components, timeout_seconds=0.5)
    ready, answer = await descriptions.readiness(two_model_graph())
    assert not ready and answer["nodes"] == {"a": True, "b": False}
    assert answer["node"] == "b" and "did not answer within 0.5 s" in answer["error"]


async def test_pooled_fetch_reads_metadata_from_a_real_server_and_reports_a_dead_one():
    server = await ModelServer(
        "a", lambda inputs: inputs, metadata=meta("a", X, [("p", "FP32", [-1])])
    ).start()
    pool = UpstreamPool()
    try:
        fetch = pooled_fetch(pool)
        status, body = await fetch(server.url, "/v2/models/a", 5.0)
        assert status == 200 and orjson.loads(body)["outputs"][0]["name"] == "p"
        status, _ = await fetch(server.url, "/v2/models/a/ready", 5.0)
        assert status == 200
        server.ready = False
        status, _ = await fetch(server.url, "/v2/models/a/ready", 5.0)
        assert status == 503
        with pytest.raises(ComponentUnavailable):
            await fetch(f"http://127.0.0.1:{closed_port()}", "/v2/models/a", 5.0)
    finally:
        pool.close()
        await server.stop()
