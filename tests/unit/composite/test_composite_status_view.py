"""`mlrollouts status <composite>`: the graph as a tree with each node's state, its component's
split and p99, read from a Prometheus HTTP API (a small real server here)."""

from __future__ import annotations

import json
import threading
import urllib.parse
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from mlrollouts.cli.plugin import GraphView, graph_rows, node_p99, render_status
from mlrollouts.composite.components import ComponentRef
from support import free_port

NOW = datetime(2026, 3, 1, 10, 0, 0, tzinfo=UTC)
SPEC = {
    "root": "route",
    "nodes": [
        {
            "name": "route",
            "type": "Switch",
            "cases": [{"when": {"feature": 0, "op": "lt", "value": 2}, "node": "thin"}],
            "default": "score",
        },
        {"name": "score", "type": "Ensemble", "children": ["income", "ab"], "combiner": {"type": "mean"}},
        {"name": "income", "type": "Model", "modelDeployment": "credit-income"},
        {"name": "ab", "type": "Model", "experiment": "credit-ab"},
        {"name": "thin", "type": "Model", "modelDeployment": "credit-thin"},
    ],
}
STATUS = {
    "phase": "Degraded",
    "message": "node 'thin' (spec.nodes[4].modelDeployment): ModelDeployment 'credit-thin' not found",
    "endpoint": "http://credit.risk.svc:80/v2/models/credit/infer",
    "nodes": [
        {"name": "route", "ready": False, "reason": "NodesNotReady", "message": "waiting for thin"},
        {"name": "score", "ready": True, "reason": "NodesReady"},
        {"name": "income", "ready": True, "reason": "ComponentProgressing", "message": "canary"},
        {"name": "ab", "ready": True, "reason": "ComponentReady"},
        {"name": "thin", "ready": False, "reason": "ComponentMissing", "message": "not found"},
    ],
}
COMPONENTS = {
    ComponentRef("ModelDeployment", "credit-income"): {
        "status": {"weights": [{"revision": "a1", "desired": 90}, {"revision": "b2", "desired": 10}]}
    },
    ComponentRef("Experiment", "credit-ab"): {
        "status": {"variants": [{"name": "x", "weight": 70}, {"name": "y", "weight": 30}]}
    },
    ComponentRef("ModelDeployment", "credit-thin"): None,
}


def test_the_graph_is_a_tree_with_state_split_and_p99():
    rows = graph_rows(SPEC, STATUS, GraphView(COMPONENTS, {"income": 0.0123, "ab": 1.5}))
    by_name = {row[0].lstrip("│├└─ ").split(" (")[0]: row for row in rows}
    assert [row[0] for row in rows] == [
        "route",
        "├─ thin (if input[0] lt 2)",
        "└─ score (default)",
        "   ├─ income",
        "   └─ ab",
    ]
    assert by_name["route"][1:3] == ["Switch", "Waiting"]
    assert by_name["score"][1:3] == ["Ensemble mean", "Ready"]
    assert by_name["income"][2:6] == [
        "Progressing",
        "ModelDeployment/credit-income",
        "a1 90%, b2 10%",
        "12.3ms",
    ]
    assert by_name["ab"][2:6] == ["Ready", "Experiment/credit-ab", "x 70%, y 30%", "1.5s"]
    assert by_name["thin"][2:6] == ["Missing", "ModelDeployment/credit-thin", "-", None]


def test_a_shared_node_is_expanded_once_and_unreachable_nodes_are_listed():
    spec = {
        "root": "seq",
        "nodes": [
            {"name": "seq", "type": "Sequence", "children": ["ens", "ens"]},
            {"name": "ens", "type": "Ensemble", "children": ["a"]},
            {"name": "a", "type": "Model", "modelDeployment": "a"},
            {"name": "spare", "type": "Model", "modelDeployment": "b"},
        ],
    }
    rows = graph_rows(spec, {}, GraphView())
    assert [row[0] for row in rows] == ["seq", "├─ ens (step 1)", "│  └─ a", "└─ ens (step 2)", "spare"]
    assert rows[3][-1] == "(shown above)"


def test_status_text_says_how_to_get_latencies():
    obj = {
        "kind": "CompositeModel",
        "metadata": {"name": "credit", "namespace": "risk"},
        "spec": SPEC,
        "status": STATUS,
    }
    text = render_status(obj, NOW)
    assert "Endpoint:   http://credit.risk.svc:80/v2/models/credit/infer" in text
    assert "Graph:      root route, timeout 30s, max concurrency 16" in text
    assert "--prometheus-url" in text
    assert "└─ score (default)" in text


class _Prometheus(BaseHTTPRequestHandler):
    queries: list[str] = []

    def do_GET(self) -> None:
        query = urllib.parse.parse_qs(urllib.parse.urlparse(self.path).query)["query"][0]
        type(self).queries.append(query)
        result = [
            {"metric": {"node": "income"}, "value": [1, "0.042"]},
            {"metric": {"node": "ab"}, "value": [1, "NaN"]},
        ]
        body = json.dumps({"status": "success", "data": {"resultType": "vector", "result": result}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture
def prometheus() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), _Prometheus)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_p99_per_node_comes_from_the_graph_histogram(prometheus: str) -> None:
    p99, note = node_p99(prometheus, "credit")
    assert p99 == {"income": 0.042}  # a node without requests (NaN) has no p99
    assert note == f"p99 over the last 5m from {prometheus}"
    query = _Prometheus.queries[-1]
    assert "mlgraph_node_duration_seconds_bucket" in query and 'graph="credit"' in query
    assert "0.99" in query and "by (node, le)" in query


def test_an_unreachable_prometheus_is_a_note_not_an_error() -> None:
    p99, note = node_p99(f"http://127.0.0.1:{free_port()}", "credit", timeout=2.0)
    assert p99 == {} and note.startswith("p99 unavailable: cannot reach Prometheus")
