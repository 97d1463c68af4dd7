"""The graph's Prometheus metrics (names are a contract with dashboards and analysis templates).

Registered on the registry the caller passes (the router's), so one ``/metrics`` shows both. Label
children are looked up once per (graph, node, code) and cached: label lookup is on the request path.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

from mlserving.metrics import CachedChildren, MetricFactory
from mlserving.router.metrics import LATENCY_BUCKETS

EVENT_OUTCOMES = ("delivered", "retried", "dropped")


class GraphMetrics(CachedChildren):
    """``mlgraph_*``: requests and latency per graph and per node, and event delivery outcomes."""

    def __init__(self, registry: CollectorRegistry) -> None:
        super().__init__()
        metric = MetricFactory(registry, "graph")
        self.requests = metric(
            Counter, "mlgraph_requests", "Graph requests answered, by status code.", "code"
        )
        self.duration = metric(
            Histogram, "mlgraph_request_duration_seconds", "Time to answer a graph request.",
            buckets=LATENCY_BUCKETS,
        )  # fmt: skip
        self.node_requests = metric(
            Counter, "mlgraph_node_requests", "Node executions, by status code (200, or the failure's code).",
            "node", "code",
        )  # fmt: skip
        self.node_duration = metric(
            Histogram, "mlgraph_node_duration_seconds", "Time a node took, its children included.",
            "node", buckets=LATENCY_BUCKETS,
        )  # fmt: skip
        self.events = metric(
            Counter, "mlgraph_events", "Result events, by outcome (delivered, retried, dropped).", "outcome"
        )

    def observe_request(self, graph: str, code: int, seconds: float) -> None:
        self._child(self.requests, graph, str(code)).inc()
        self._child(self.duration, graph).observe(seconds)

    def observe_node(self, graph: str, node: str, code: int, seconds: float) -> None:
        self._child(self.node_requests, graph, node, str(code)).inc()
        self._child(self.node_duration, graph, node).observe(seconds)

    def count_event(self, graph: str, outcome: str, amount: int = 1) -> None:
        self._child(self.events, graph, outcome).inc(amount)
