"""onError Fail / Skip / Default, node and graph timeouts, and how failures are reported."""

from __future__ import annotations

import time

import pytest
from graph_fakes import (
    Components,
    compiled,
    infer,
    model_node,
    output,
    sample_value,
    tensor,
    weighted_row_sum,
)
from prometheus_client import CollectorRegistry

from mlserving.router.graph.executor import ComponentUnavailable

X = tensor("input", [1.0, 2.0, 3.0, 4.0], [2, 2])  # row sums 3 and 7


def ensemble(combiner, policies, **extra):
    """Children a (x1), b (x2), c (x4); ``policies`` maps a child to its node fields."""
    children = ["a", "b", "c"]
    nodes = [model_node(name, **policies.get(name, {})) for name in children]
    nodes.append({"name": "e", "type": "Ensemble", "children": children, "combiner": combiner})
    return compiled({"root": "e", "nodes": nodes, **extra})


def components(**failures):
    fakes = Components()
    for name, weight in (("a", 1), ("b", 2), ("c", 4)):
        fakes.add(name, weighted_row_sum(weight), **failures.get(name, {}))
    return fakes


FAILURES = {
    "raises": ({"raises": RuntimeError("socket closed")}, 502, "calling component 'c' failed: socket closed"),
    "answers 500": (
        {"status": 500, "body": b'{"error": "model crashed"}'},
        502,
        "component 'c' answered 500: model crashed",
    ),
    "answers 400": (
        {"status": 400, "body": b'{"error": "input has 3 features"}'},
        400,
        "component 'c' answered 400: input has 3 features",
    ),
    "is unavailable": (
        {"raises": ComponentUnavailable("connection refused")},
        503,
        "component 'c' is unavailable: connection refused",
    ),
    "answers garbage": ({"body": b"<html>"}, 502, "component 'c' answered an invalid inference response"),
    "answers no outputs": (
        {"body": b'{"id": "x"}'},
        502,
        "component 'c' answered an invalid inference response",
    ),
}


@pytest.mark.parametrize("failure", FAILURES.values(), ids=FAILURES.keys())
async def test_fail_answers_the_failure_naming_the_node(failure):
    behaviour, status, message = failure
    fakes = components(c=behaviour)
    code, body, _ = await infer(ensemble({"type": "mean"}, {}), fakes, X)
    assert code == status
    assert body["node"] == "c"
    assert body["error"].startswith("node 'c': ") and message in body["error"]


async def test_fail_cancels_the_siblings_still_running():
    fakes = components(a={"delay": 5}, c={"raises": RuntimeError("boom")})
    started = time.perf_counter()
    code, _, _ = await infer(ensemble({"type": "mean"}, {}), fakes, X)
    assert code == 502 and time.perf_counter() - started < 1
    assert fakes.cancelled == ["http://a:8080"]


@pytest.mark.parametrize(
    ("combiner", "expected"),
    [
        # b skipped: mean of a and c
        ({"type": "mean"}, [(3 + 12) / 2, (7 + 28) / 2]),
        # weights of a and c only: (1*3 + 3*12) / 4
        ({"type": "weightedMean", "weights": [1, 2, 3]}, [(3 + 36) / 4, (7 + 84) / 4]),
        # remaining weights scaled to the total magnitude 6: a 2, c 4 -> 2*3 + 4*12 + 1
        ({"type": "linear", "weights": [1, 3, 2], "bias": 1}, [2 * 3 + 4 * 12 + 1, 2 * 7 + 4 * 28 + 1]),
    ],
)
async def test_skip_drops_the_child_and_renormalises(combiner, expected):
    fakes = components(b={"status": 503, "body": b'{"error": "overloaded"}'})
    code, body, headers = await infer(ensemble(combiner, {"b": {"onError": "Skip"}}), fakes, X)
    assert code == 200, body
    assert output(body)["data"] == pytest.approx(expected)
    report = body["parameters"]["graph"]
    assert report["skipped"] == [
        {"node": "b", "status": 502, "error": "node 'b': component 'b' answered 503: overloaded"}
    ]
    assert set(report["components"]) == {"a", "c"}
    assert headers[b"x-mlrollouts-graph-skipped"] == b"b"


async def test_default_substitutes_the_default_value_for_every_row():
    policy = {"onError": "Default", "defaultOutputs": [{"name": "value", "datatype": "FP64", "value": 100.0}]}
    fakes = components(c={"raises": RuntimeError("boom")})
    code, body, headers = await infer(ensemble({"type": "sum"}, {"c": policy}), fakes, X)
    assert code == 200, body
    assert output(body)["data"] == [3 + 6 + 100, 7 + 14 + 100]
    assert body["parameters"]["graph"]["defaulted"][0]["node"] == "c"
    assert headers[b"x-mlrollouts-graph-defaulted"] == b"c"


async def test_a_child_timing_out_is_skipped_without_waiting_for_it():
    fakes = components(c={"delay": 2})
    graph = ensemble({"type": "mean"}, {"c": {"onError": "Skip", "timeoutSeconds": 0.05}})
    started = time.perf_counter()
    code, body, _ = await infer(graph, fakes, X)
    assert code == 200 and time.perf_counter() - started < 0.5
    assert output(body)["data"] == [(3 + 6) / 2, (7 + 14) / 2]
    skipped = body["parameters"]["graph"]["skipped"]
    assert skipped == [
        {"node": "c", "status": 504, "error": "node 'c': no answer within its timeout of 0.05 s"}
    ]
    assert fakes.cancelled == ["http://c:8080"]


async def test_a_child_timing_out_under_fail_answers_504_naming_it():
    registry = CollectorRegistry()
    fakes = components(b={"delay": 2})
    nodes = [
        model_node("a"),
        model_node("b", timeoutSeconds=0.05),
        {"name": "e", "type": "Ensemble", "children": ["a", "b"]},
    ]
    graph = compiled({"root": "e", "nodes": nodes}, registry=registry)
    code, body, _ = await infer(graph, fakes, X)
    assert code == 504 and body["node"] == "b" and "no answer within its timeout of 0.05 s" in body["error"]
    assert sample_value(registry, "mlgraph_node_requests_total", graph="g", node="b", code="504") == 1
    assert sample_value(registry, "mlgraph_node_requests_total", graph="g", node="e", code="504") == 1
    assert sample_value(registry, "mlgraph_requests_total", graph="g", code="504") == 1


async def test_the_graph_timeout_names_the_nodes_still_waited_for():
    registry = CollectorRegistry()
    fakes = components(b={"delay": 2}, c={"delay": 2})
    nodes = [
        model_node("a"),
        model_node("b"),
        model_node("c"),
        {"name": "e", "type": "Ensemble", "children": ["a", "b", "c"]},
    ]
    graph = compiled({"root": "e", "nodes": nodes, "timeoutSeconds": 0.1}, registry=registry)
    started = time.perf_counter()
    code, body, _ = await infer(graph, fakes, X)
    assert code == 504 and 0.09 <= time.perf_counter() - started < 0.5
    assert body["error"] == "graph 'g' did not answer within 0.1 s (waiting for b, c)"
    assert body["nodes"] == ["b", "c"]
    assert sorted(fakes.cancelled) == ["http://b:8080", "http://c:8080"]
    assert sample_value(registry, "mlgraph_node_requests_total", graph="g", node="b", code="504") == 1
    assert sample_value(registry, "mlgraph_node_requests_total", graph="g", node="a", code="200") == 1


async def test_every_child_skipped_fails_the_ensemble():
    fakes = components(**{n: {"raises": ComponentUnavailable("refused")} for n in "abc"})
    graph = ensemble({"type": "mean"}, {n: {"onError": "Skip"} for n in "abc"})
    code, body, _ = await infer(graph, fakes, X)
    assert code == 503
    assert body["node"] == "e" and "every child failed and was skipped" in body["error"]
    assert [r["node"] for r in body["graph"]["skipped"]] == ["a", "b", "c"]


async def test_an_inner_node_default_absorbs_a_failure_below_it():
    fakes = components(a={"raises": RuntimeError("boom")})
    policy = {"onError": "Default", "defaultOutputs": [{"name": "value", "value": [0.5, 0.5]}]}
    nodes = [
        model_node("a"),
        model_node("b"),
        model_node("c"),
        {"name": "inner", "type": "Ensemble", "children": ["a", "b"], **policy},
        {"name": "outer", "type": "Sequence", "children": ["inner", "c"], "mappings": [{"value": "input"}]},
    ]
    code, body, _ = await infer(compiled({"root": "outer", "nodes": nodes}), fakes, X)
    assert code == 200, body
    # c (x4) receives the default [[0.5, 0.5], [0.5, 0.5]]: row sums 1 -> 4
    assert fakes.requests_to("c") == [{"inputs": [tensor("input", [0.5, 0.5, 0.5, 0.5], [2, 2])]}]
    assert output(body)["data"] == [4.0, 4.0]
    assert [r["node"] for r in body["parameters"]["graph"]["defaulted"]] == ["inner"]
    assert "node 'a'" in body["parameters"]["graph"]["defaulted"][0]["error"]


async def test_a_failed_stack_meta_model_fails_the_ensemble():
    fakes = components(c={"status": 500, "body": b"{}"})
    nodes = [
        model_node("a"),
        model_node("b"),
        model_node("c"),
        {"name": "e", "type": "Ensemble", "children": ["a", "b"], "combiner": {"type": "stack", "node": "c"}},
    ]
    code, body, _ = await infer(compiled({"root": "e", "nodes": nodes}), fakes, X)
    assert code == 502 and body["node"] == "c"
