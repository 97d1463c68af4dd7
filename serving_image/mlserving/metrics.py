"""Prometheus metrics both servers declare the same way."""

from __future__ import annotations

from typing import Any, TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, disable_created_metrics
from prometheus_client.metrics import MetricWrapperBase

# The *_created series double the exposition size and no query of the project uses them.
disable_created_metrics()  # type: ignore[no-untyped-call]

M = TypeVar("M", bound=MetricWrapperBase)


class MetricFactory:
    """``factory(Counter, name, documentation, *extra_labels, **options)``: a metric in ``registry``
    labelled ``(*labels, *extra_labels)``."""

    def __init__(self, registry: CollectorRegistry, *labels: str) -> None:
        self.registry = registry
        self.labels = labels

    def __call__(self, kind: type[M], name: str, documentation: str, *extra_labels: str, **options: Any) -> M:
        return kind(name, documentation, (*self.labels, *extra_labels), registry=self.registry, **options)


class CachedChildren:
    """Metrics whose label children are looked up once per label values and then cached, for the
    metrics updated on the request path (``labels()`` hashes and locks on every call)."""

    def __init__(self) -> None:
        self._cache: dict[tuple[Any, ...], Any] = {}

    def _child(self, metric: Any, *labels: str) -> Any:
        key = (id(metric), *labels)
        child = self._cache.get(key)
        if child is None:
            child = self._cache[key] = metric.labels(*labels)
        return child


class RewardMetrics:
    """Feedback and the sum and the sum of squares of its rewards: the mean and variance of unbounded
    (Gaussian) rewards follow from the three. The sums are gauges, as rewards may be negative."""

    def __init__(self, metric: MetricFactory, prefix: str, received: str) -> None:
        self.feedback = metric(Counter, f"{prefix}_feedback", f"Feedback {received}.")
        self.reward = metric(Gauge, f"{prefix}_reward_sum", f"Sum of rewards {received}.")
        self.reward_squares = metric(
            Gauge, f"{prefix}_reward_sum_squares", f"Sum of squared rewards {received}."
        )

    def observe(self, reward: float | None, *labels: str) -> None:
        self.feedback.labels(*labels).inc()
        if reward is not None:
            reward = float(reward)
            self.reward.labels(*labels).inc(reward)
            self.reward_squares.labels(*labels).inc(reward * reward)
