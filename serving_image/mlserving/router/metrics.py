"""The router's Prometheus metrics (names are a contract with the operator's analysis templates)."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from mlserving.metrics import CachedChildren, MetricFactory, RewardMetrics

LATENCY_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)  # fmt: skip


class RouterMetrics(CachedChildren):
    """One registry per router; label children are cached because label lookup is on the hot path."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        super().__init__()
        self._request_children: dict[tuple[str, str, int], tuple[Any, Any]] = {}
        self.registry = CollectorRegistry(auto_describe=True)
        metric = MetricFactory(self.registry, "route", "variant")
        self.requests = metric(
            Counter,
            "mlrouter_requests",
            "Requests answered, by route, serving variant and status code.",
            "code",
        )
        self.duration = metric(
            Histogram,
            "mlrouter_request_duration_seconds",
            "Time from request received to response sent.",
            buckets=LATENCY_BUCKETS,
        )
        self.shadow_agreement = metric(
            Counter, "mlrouter_shadow_agreement", "Shadow predictions compared with the primary's.", "agree"
        )
        self.shadow_requests = metric(
            Counter,
            "mlrouter_shadow_requests",
            "Mirrored requests, by outcome (ok, error, dropped).",
            "outcome",
        )
        self.rewards = RewardMetrics(metric, "mlrouter", "credited to a variant")
        self.table_reloads = Counter(
            "mlrouter_table_reloads",
            "Route table loads, by result (applied, rejected).",
            ["result"],
            registry=self.registry,
        )
        self.upstream_retries = metric(
            Counter, "mlrouter_upstream_retries", "Retries after a connection failure."
        )
        self.upstream_ejections = metric(
            Counter,
            "mlrouter_upstream_ejections",
            "Endpoints taken out of a variant's rotation after failing (outlier detection).",
        )

    def observe_request(self, route: str, variant: str, code: int, seconds: float) -> None:
        key = (route, variant, code)
        children = self._request_children.get(key)
        if children is None:
            children = self._request_children[key] = (
                self._child(self.requests, route, variant, str(code)),
                self._child(self.duration, route, variant),
            )
        children[0].inc()
        children[1].observe(seconds)

    def count(self, metric: Any, *labels: str, amount: float = 1.0) -> None:
        self._child(metric, *labels).inc(amount)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
