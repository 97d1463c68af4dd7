"""The graph's Prometheus metrics (names are a contract with dashboards and analysis templates).

Registered on the registry the caller passes (the router's), so one ``/metrics`` shows both. Label
children are looked up once per (graph, node, code) and cached: label lookup is on the request path.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram

LATENCY_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)  # fmt: skip

EVENT_OUTCOMES = ("delivered", "retried", "dropped")


class GraphMetrics:
    """``mlgraph_*``: requests and latency per graph and per node, and event delivery outcomes."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "mlgraph_requests",
            "Graph requests answered, by status code.",
            ["graph", "code"],
            registry=registry,
        )
        self.duration = Histogram(
            "mlgraph_request_duration_seconds", "Time to answer a graph request.",
            ["graph"], buckets=LATENCY_BUCKETS, registry=registry,
        )  # fmt: skip
        self.node_requests = Counter(
            "mlgraph_node_requests", "Node executions, by status code (200, or the failure's code).",
            ["graph", "node", "code"], registry=registry,
        )  # fmt: skip
        self.node_duration = Histogram(
            "mlgraph_node_duration_seconds", "Time a node took, its children included.",
            ["graph", "node"], buckets=LATENCY_BUCKETS, registry=registry,
        )  # fmt: skip
        self.events = Counter(
            "mlgraph_events", "Result events, by outcome (delivered, retried, dropped).",
            ["graph", "outcome"], registry=registry,
        )  # fmt: skip
        self._cache: dict[tuple[Any, ...], Any] = {}

    def _child(self, metric: Any, *labels: str) -> Any:
        key = (id(metric), *labels)
        child = self._cache.get(key)
        if child is None:
            child = self._cache[key] = metric.labels(*labels)
        return child

    def observe_request(self, graph: str, code: int, seconds: float) -> None:
        self._child(self.requests, graph, str(code)).inc()
        self._child(self.duration, graph).observe(seconds)

    def observe_node(self, graph: str, node: str, code: int, seconds: float) -> None:
        self._child(self.node_requests, graph, node, str(code)).inc()
        self._child(self.node_duration, graph, node).observe(seconds)

    def count_event(self, graph: str, outcome: str, amount: int = 1) -> None:
        self._child(self.events, graph, outcome).inc(amount)
