"""Running composite models: per-node metrics in a real Prometheus, hot reload of the graph, a router
killed and started again, and result events delivered to a real sink."""

from __future__ import annotations

import threading
import time

import httpx
import pytest
from graph_testing import by_hand, ensemble, graph_route, model, rows_request, value_rows
from router_testing import route, table, variant

from support import wait_until
from support.prometheus import PrometheusServer

pytestmark = pytest.mark.integration

ROW = [1.0, 2.0]


def infer(router_url: str, model_name: str, timeout: float = 20) -> httpx.Response:
    return httpx.post(f"{router_url}/v2/models/{model_name}/infer", json=rows_request(ROW), timeout=timeout)


def mean_of(*names: str) -> list[float]:
    answers = [by_hand(name, ROW) for name in names]
    return [sum(column) / len(answers) for column in zip(*answers, strict=True)]


def test_per_node_metrics_are_scraped_by_prometheus(affine, start_upstream, start_router, tmp_path):
    prometheus = PrometheusServer(tmp_path / "prometheus")
    broken = start_upstream("broken", "--status", "500")
    slow = start_upstream("slow", "--delay", "0.2")
    nodes = [model(n, affine[n].url) for n in ("shift", "double", "swap")]
    router = start_router(
        table(
            graph_route(
                "credit", "score", *nodes, model("broken", broken.url, onError="Skip"),
                ensemble("score", ["shift", "double", "swap", "broken"]), model_name="credit-score",
            ),
            graph_route("slow", "slow", model("slow", slow.url)),
        )
    )  # fmt: skip
    prometheus.start()
    try:
        prometheus.set_targets([([router.url.removeprefix("http://")], {"component": "router"})])
        requests = 12
        for _ in range(requests):
            assert infer(router.url, "credit-score").status_code == 200
        for _ in range(3):
            assert infer(router.url, "slow").status_code == 200

        def counts() -> dict[tuple[str, str], float]:
            series = prometheus.query('sum by (node, code) (mlgraph_node_requests_total{graph="credit"})')
            return {(s["metric"]["node"], s["metric"]["code"]): float(s["value"][1]) for s in series}

        expected = {("shift", "200"), ("double", "200"), ("swap", "200"), ("broken", "502"), ("score", "200")}
        wait_until(lambda: set(counts()) == expected and min(counts().values()) == requests, timeout=60,
                   interval=0.5, message="per-node counts in Prometheus")  # fmt: skip
        [total] = prometheus.query('mlgraph_requests_total{graph="credit"}')
        assert total["metric"]["code"] == "200" and float(total["value"][1]) == requests

        median = "histogram_quantile(0.5, sum by (le, graph, node) (mlgraph_node_duration_seconds_bucket))"
        medians = {
            (s["metric"]["graph"], s["metric"]["node"]): float(s["value"][1])
            for s in prometheus.wait_for_series(median + " > 0")
        }
        # The node that is slow stands out: 0.2 s per call, against milliseconds for the model servers.
        assert medians[("slow", "slow")] >= 0.1
        assert all(medians[("credit", node)] < 0.1 for node in ("shift", "double", "swap")), medians
    finally:
        prometheus.stop()


def credit_table(*nodes: dict, root: str = "e") -> dict:
    """The route table of one graph route, model ``credit-score``."""
    return table(graph_route("credit", root, *nodes, model_name="credit-score"))


def test_a_graph_is_hot_reloaded_without_a_restart(affine, start_upstream, start_router):
    slow = start_upstream("slow", "--delay", "1.5", "--label", "7")
    shift, double, swap = (model(n, affine[n].url) for n in ("shift", "double", "swap"))
    router = start_router(credit_table(model("slow", slow.url), root="slow"))
    pid = router.proc.pid
    in_flight: list[httpx.Response] = []
    threads = [
        threading.Thread(target=lambda: in_flight.append(infer(router.url, "credit-score"))) for _ in range(3)
    ]
    for thread in threads:
        thread.start()
    wait_until(lambda: slow.stats()["infer"] >= 3, timeout=5, message="requests in flight")

    applied = router.metric("mlrouter_table_reloads_total", result="applied")
    changed = time.monotonic()
    router.write_table(credit_table(shift, double, ensemble("e", ["shift", "double"])))
    wait_until(lambda: router.metric("mlrouter_table_reloads_total", result="applied") > applied, timeout=5,
               interval=0.02)  # fmt: skip
    assert time.monotonic() - changed < 1.0
    assert value_rows(infer(router.url, "credit-score").json()) == [mean_of("shift", "double")]
    for thread in threads:
        thread.join()
    # Requests that started on the old graph finish on it.
    assert [r.status_code for r in in_flight] == [200] * 3
    assert all(r.json()["outputs"][0]["data"] == [7] for r in in_flight)

    router.write_table(credit_table(shift, swap, ensemble("e", ["shift", "swap"])))
    wait_until(
        lambda: value_rows(infer(router.url, "credit-score").json()) == [mean_of("shift", "swap")], timeout=5
    )

    loop = {"name": "loop", "type": "Sequence", "children": ["e"]}
    router.write_table(credit_table(shift, loop, ensemble("e", ["shift", "loop"])))
    wait_until(lambda: router.metric("mlrouter_table_reloads_total", result="rejected") == 1, timeout=5)
    assert "routes.0.graph" in router.proc.output() and "cycle" in router.proc.output()
    # The last good graph stays.
    assert value_rows(infer(router.url, "credit-score").json()) == [mean_of("shift", "swap")]
    assert router.proc.pid == pid and router.proc.alive()


def test_a_model_turns_from_graph_to_plain_route_and_back_without_a_restart(affine, start_router):
    shift, swap = model("shift", affine["shift"].url), model("swap", affine["swap"].url)
    graph = credit_table(shift, swap, ensemble("e", ["shift", "swap"]))
    router = start_router(graph)
    pid = router.proc.pid
    assert value_rows(infer(router.url, "credit-score").json()) == [mean_of("shift", "swap")]
    plain = variant("v", affine["double"].url, weight=1, model="double")
    router.write_table(table(route(name="credit", model="credit-score", variants=[plain])))
    wait_until(
        lambda: infer(router.url, "credit-score").headers.get("x-mlrollouts-variant") == "v", timeout=5
    )
    assert httpx.get(f"{router.url}/v2/models/credit-score", timeout=10).json()["name"] == "double"
    router.write_table(graph)
    wait_until(lambda: "x-mlrollouts-variant" not in infer(router.url, "credit-score").headers, timeout=5)
    metadata = httpx.get(f"{router.url}/v2/models/credit-score", timeout=10).json()
    assert metadata["platform"] == "mlrollouts-graph"
    assert router.proc.pid == pid and router.proc.alive()


def test_a_router_killed_and_started_again_serves_the_graph_at_once(affine, start_router):
    nodes = [model(n, affine[n].url) for n in ("shift", "double", "swap")]
    graph = credit_table(*nodes, ensemble("e", ["shift", "double", "swap"]))
    first = start_router(graph)
    expected = [mean_of("shift", "double", "swap")]
    assert value_rows(infer(first.url, "credit-score").json()) == expected

    outcomes: list[int | str] = []
    stop = threading.Event()

    def client() -> None:
        while not stop.is_set():
            try:
                outcomes.append(infer(first.url, "credit-score", timeout=5).status_code)
            except httpx.TransportError as exc:
                outcomes.append(type(exc).__name__)
            time.sleep(0.01)

    thread = threading.Thread(target=client)
    thread.start()
    try:
        wait_until(lambda: outcomes.count(200) >= 5, timeout=10)
        first.proc.kill()  # SIGKILL mid-traffic, as a crash or an OOM kill would
        wait_until(
            lambda: isinstance(outcomes[-1], str), timeout=10, message="the client sees the router gone"
        )
        port = int(first.url.rsplit(":", 1)[1])
        second = start_router(graph, port=port)
        served_before = outcomes.count(200)
        wait_until(lambda: outcomes.count(200) >= served_before + 5, timeout=10, message="served again")
    finally:
        stop.set()
        thread.join()
    assert value_rows(infer(second.url, "credit-score").json()) == expected
    # Nothing but connection failures while it was down: no request got a wrong or failed answer.
    assert {o for o in outcomes if not isinstance(o, str)} == {200}
    assert second.metric("mlgraph_requests_total", graph="credit", code="200") >= 5


def test_results_reach_a_real_sink_as_cloudevents(affine, start_router, start_sink):
    sink = start_sink("--fail-first", "2")
    shift, double = model("shift", affine["shift"].url), model("double", affine["double"].url)
    events = {
        "sink": f"{sink}/events",
        "initialBackoffSeconds": 0.05,
        "filter": {"feature": 0, "op": "gt", "value": 0},
    }
    router = start_router(
        table(
            graph_route("credit", "e", shift, double, ensemble("e", ["shift", "double"]), model_name="credit-score",
                        events=events),
            graph_route("binary", "shift", shift, events={"sink": f"{sink}/binary", "mode": "binary"}),
        )
    )  # fmt: skip
    ids = [infer(router.url, "credit-score").json()["id"] for _ in range(4)]
    negative = httpx.post(
        f"{router.url}/v2/models/credit-score/infer", json=rows_request([-5.0, 1.0]), timeout=20
    )
    assert negative.status_code == 200  # its first feature is negative: filtered out, no event
    binary_id = infer(router.url, "binary").json()["id"]

    def received() -> list[dict]:
        return httpx.get(f"{sink}/received", timeout=5).json()

    wait_until(lambda: len(received()) == 5, timeout=20, message="5 events at the sink")
    structured = [
        e for e in received() if e["headers"]["content-type"].startswith("application/cloudevents+json")
    ]
    assert sorted(e["body"]["id"] for e in structured) == sorted(ids)
    event = structured[0]["body"]
    assert event["type"] == "io.mlrollouts.graph.result" and event["source"] == "/mlrollouts/graphs/credit"
    assert event["data"]["model_name"] == "credit-score" and event["data"]["outputs"][0]["name"] == "value"
    [binary] = [e for e in received() if "ce-id" in e["headers"]]
    assert binary["headers"]["ce-id"] == binary_id and binary["body"]["outputs"][0]["name"] == "value"
    assert router.metric("mlgraph_events_total", graph="credit", outcome="delivered") == 4
    assert router.metric("mlgraph_events_total", outcome="retried") == 2  # the sink refused the first two
    assert router.metric("mlgraph_events_total", outcome="dropped") == 0
