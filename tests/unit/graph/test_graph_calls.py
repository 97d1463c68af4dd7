"""The graph over the router's pooled upstream client, against real HTTP model servers on loopback."""

from __future__ import annotations

import orjson
import pytest
from graph_fakes import compiled, request, tensor
from http_servers import ModelServer, closed_port

from mlserving.router.graph.calls import pooled_call
from mlserving.router.graph.executor import ComponentUnavailable, run_graph
from mlserving.router.upstream import UpstreamPool

X = tensor("input", [1.0, 2.0, 3.0, 4.0], [2, 2])


def scaled(weight: float):
    return lambda inputs: [tensor("value", [weight * sum(inputs[0]["data"][i : i + 2]) for i in (0, 2)])]


@pytest.fixture
async def servers():
    started = [
        await ModelServer(name, scaled(w), variant=v).start()
        for name, w, v in (("a", 1, "stable"), ("b", 2, "canary"), ("c", 4, "stable"))
    ]
    yield {server.model: server for server in started}
    for server in started:
        await server.stop()


@pytest.fixture
async def pool():
    upstream_pool = UpstreamPool()
    yield upstream_pool
    upstream_pool.close()


def ensemble_over(servers, **policies):
    nodes = [
        {"name": n, "type": "Model", "upstream": s.url, "model": n, **policies.get(n, {})}
        for n, s in servers.items()
    ]
    nodes.append({"name": "e", "type": "Ensemble", "children": list(servers), "combiner": {"type": "mean"}})
    return compiled({"root": "e", "nodes": nodes})


async def test_an_ensemble_over_real_model_servers(servers, pool):
    call = pooled_call(pool)
    graph = ensemble_over(servers)
    headers = [(b"x-user-id", b"u-1"), (b"host", b"router:8080")]
    for _ in range(3):  # later requests reuse the pooled keep-alive connections
        status, body, _ = await run_graph(graph, request(X), call, headers=headers)
        assert status == 200, body
        answer = orjson.loads(body)
        assert answer["outputs"][0]["data"] == [(3 + 6 + 12) / 3, (7 + 14 + 28) / 3]
    assert answer["parameters"]["graph"]["components"]["b"] == {
        "model": "b",
        "variant": "canary",
        "id": "b-3",
    }
    assert pool.idle_connections() == 3
    seen = servers["a"].requests[-1]
    assert seen["body"] == {"inputs": [X]}
    assert seen["headers"]["x-user-id"] == "u-1" and seen["headers"]["Content-Type"] == "application/json"


async def test_a_missing_component_answers_503_naming_the_node(servers, pool):
    graph = compiled(
        {
            "root": "e",
            "nodes": [
                {"name": "a", "type": "Model", "upstream": servers["a"].url, "model": "a"},
                {
                    "name": "gone",
                    "type": "Model",
                    "upstream": f"http://127.0.0.1:{closed_port()}",
                    "model": "gone",
                },
                {"name": "e", "type": "Ensemble", "children": ["a", "gone"]},
            ],
        }
    )
    status, body, _ = await run_graph(graph, request(X), pooled_call(pool))
    assert status == 503
    answer = orjson.loads(body)
    assert answer["node"] == "gone" and "component 'gone' is unavailable" in answer["error"]


async def test_a_slow_component_times_out_with_504(servers, pool):
    servers["c"].delay = 0.5
    graph = ensemble_over(servers, c={"timeoutSeconds": 0.1})
    status, body, _ = await run_graph(graph, request(X), pooled_call(pool))
    assert status == 504 and orjson.loads(body)["node"] == "c"


async def test_a_component_answering_404_is_a_failed_node(servers, pool):
    graph = compiled(
        {
            "root": "a",
            "nodes": [{"name": "a", "type": "Model", "upstream": servers["a"].url, "model": "not-a"}],
        }
    )
    status, body, _ = await run_graph(graph, request(X), pooled_call(pool))
    assert status == 502 and "component 'not-a' answered 404: no model 'not-a'" in orjson.loads(body)["error"]


async def test_resolved_endpoints_take_turns_and_a_refused_one_is_retried_on_another(pool):
    first = await ModelServer("m", scaled(1)).start()
    second = await ModelServer("m", scaled(1)).start()
    dead = f"http://127.0.0.1:{closed_port()}"
    try:
        endpoints = {"http://m.ns.svc:8080": [first.url, second.url, dead]}
        call = pooled_call(pool, resolve=endpoints.__getitem__)
        body = orjson.dumps({"inputs": [X]})
        for _ in range(6):
            status, _, _ = await call("http://m.ns.svc:8080", "/v2/models/m/infer", body, [], 5.0)
            assert status == 200
        # Turns: first, second, dead -> first, and again: the dead endpoint's turns went to its neighbour.
        assert (len(first.requests), len(second.requests)) == (4, 2)
        only_dead = pooled_call(pool, resolve=lambda _: [dead])
        with pytest.raises(ComponentUnavailable, match="cannot connect"):
            await only_dead("http://m.ns.svc:8080", "/v2/models/m/infer", body, [], 5.0)
    finally:
        await first.stop()
        await second.stop()
