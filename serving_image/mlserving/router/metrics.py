"""The router's Prometheus metrics (names are a contract with the operator's analysis templates)."""

from __future__ import annotations

import bisect
import math
from typing import Any

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.utils import floatToGoString

from mlserving.metrics import CachedChildren, MetricFactory, RewardMetrics

LATENCY_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)  # fmt: skip


class RequestTally:
    """``mlrouter_requests_total`` and ``mlrouter_request_duration_seconds``, counted in plain numbers.

    Every request the router answers is counted here, so the count is a few list operations (a
    ``prometheus_client`` counter and histogram take a lock per value, and the histogram searches its
    buckets in Python). The families are made when the registry is collected, sample for sample as
    that counter and histogram would expose them (without ``_created``, as every metric here)."""

    def __init__(self) -> None:
        # (route, variant) -> [sum, count per bucket (the last is +Inf)]
        self._durations: dict[tuple[str, str], list[Any]] = {}
        # (route, variant, code) -> count
        self._codes: dict[tuple[str, str, int], int] = {}

    def observe(self, route: str, variant: str, code: int, seconds: float) -> None:
        codes = self._codes
        key = (route, variant, code)
        codes[key] = codes.get(key, 0) + 1
        duration = self._durations.get((route, variant))
        if duration is None:
            duration = self._durations[(route, variant)] = [0.0, [0] * (len(LATENCY_BUCKETS) + 1)]
        duration[0] += seconds
        duration[1][bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1

    def describe(self) -> list[Metric]:
        return [self._requests(), self._histogram()]

    def collect(self) -> list[Metric]:
        requests = self._requests()
        for (route, variant, code), count in list(self._codes.items()):
            requests.add_metric([route, variant, str(code)], count)
        histogram = self._histogram()
        for (route, variant), (total, counts) in list(self._durations.items()):
            cumulative, buckets = 0, []
            for bound, count in zip(_BUCKET_NAMES, counts, strict=True):
                cumulative += count
                buckets.append((bound, cumulative))
            histogram.add_metric([route, variant], buckets, total)
        return [requests, histogram]

    @staticmethod
    def _requests() -> CounterMetricFamily:
        return CounterMetricFamily(
            "mlrouter_requests",
            "Requests answered, by route, serving variant and status code.",
            labels=["route", "variant", "code"],
        )

    @staticmethod
    def _histogram() -> HistogramMetricFamily:
        return HistogramMetricFamily(
            "mlrouter_request_duration_seconds",
            "Time from request received to response sent.",
            labels=["route", "variant"],
        )


_BUCKET_NAMES = [floatToGoString(bound) for bound in (*LATENCY_BUCKETS, math.inf)]  # type: ignore[no-untyped-call]


class RouterMetrics(CachedChildren):
    """One registry per router; label children are cached because label lookup is on the hot path."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        super().__init__()
        self.registry = CollectorRegistry(auto_describe=True)
        metric = MetricFactory(self.registry, "route", "variant")
        self.tally = RequestTally()
        self.registry.register(self.tally)
        self.observe_request = self.tally.observe
        """``observe_request(route, variant, code, seconds)``: one answered request."""
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

    def count(self, metric: Any, *labels: str, amount: float = 1.0) -> None:
        self._child(metric, *labels).inc(amount)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
