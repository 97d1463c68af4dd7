"""GraphRuntime: the graphs of a route table, hot-reloaded, with event publishers kept across reloads."""

from __future__ import annotations

import orjson
from graph_fakes import Components, request, sample_value, tensor, weighted_row_sum
from http_servers import Sink
from prometheus_client import CollectorRegistry

from mlserving.router import RouteTable
from mlserving.router.graph.runtime import GraphRuntime, graph_upstreams


def table(sink: str, combiner: str = "sum", events_type: str = "io.mlrollouts.graph.result") -> RouteTable:
    return RouteTable.model_validate(
        {
            "routes": [
                {
                    "name": "iris",
                    "model": "iris",
                    "variants": [{"name": "v1", "upstreams": ["http://iris-1:8080"], "weight": 1}],
                },
                {
                    "name": "credit",
                    "model": "credit-score",
                    "graph": {
                        "root": "e",
                        "nodes": [
                            {"name": "a", "type": "Model", "upstream": "http://a:8080", "model": "a"},
                            {"name": "b", "type": "Model", "upstream": "http://b:8080", "model": "b"},
                            {
                                "name": "e",
                                "type": "Ensemble",
                                "children": ["a", "b"],
                                "combiner": {"type": combiner},
                            },
                        ],
                        "events": {"sink": sink, "type": events_type},
                    },
                },
            ]
        }
    )


async def test_update_serves_graph_routes_and_keeps_an_unchanged_publisher():
    sink = await Sink().start()
    registry = CollectorRegistry()
    components = Components()
    components.add("a", weighted_row_sum(1))
    components.add("b", weighted_row_sum(2))
    runtime = GraphRuntime(components, registry)
    try:
        runtime.update(table(sink.url))
        assert runtime.graph_for_model("iris") is None
        graph = runtime.graph_for_model("credit-score")
        assert graph is not None and graph.name == "credit"
        status, body, _ = await runtime.infer(
            graph, request(tensor("input", [1.0, 2.0], [1, 2])), response_id="r1"
        )
        assert status == 200 and orjson.loads(body)["outputs"][0]["data"] == [9.0]
        assert sample_value(registry, "mlgraph_requests_total", graph="credit", code="200") == 1

        publisher = runtime.publishers["credit"]
        runtime.update(table(sink.url, combiner="max"))  # the graph changes, its events do not
        reloaded = runtime.graph_for_model("credit-score")
        assert reloaded is not graph and reloaded.events is publisher
        status, body, _ = await runtime.infer(
            reloaded, request(tensor("input", [1.0, 2.0], [1, 2])), response_id="r2"
        )
        assert orjson.loads(body)["outputs"][0]["data"] == [6.0]

        runtime.update(table(sink.url, events_type="com.bank.score"))  # new events spec: a new publisher
        assert runtime.publishers["credit"] is not publisher
        await runtime.close()
        assert publisher.delivered == 2 and runtime.publishers == {}
        assert sorted(orjson.loads(r.body)["id"] for r in sink.received) == ["r1", "r2"]
    finally:
        await sink.stop()


async def test_a_route_removed_from_the_table_drains_its_publisher():
    sink = await Sink(delay=0.05).start()
    components = Components()
    components.add("a", weighted_row_sum(1))
    components.add("b", weighted_row_sum(1))
    runtime = GraphRuntime(components)
    try:
        runtime.update(table(sink.url))
        graph = runtime.graph_for_model("credit-score")
        publisher = graph.events
        for index in range(3):
            await runtime.infer(graph, request(tensor("input", [1.0], [1, 1])), response_id=f"r{index}")
        runtime.update(RouteTable())
        assert runtime.graph_for_model("credit-score") is None
        await runtime.close()  # waits for the retired publisher too
        assert publisher.delivered == 3
    finally:
        await sink.stop()


def test_graph_upstreams_lists_every_component():
    assert graph_upstreams(table("http://sink:9000")) == ["http://a:8080", "http://b:8080"]
