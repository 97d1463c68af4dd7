"""Prometheus metrics of the learner, read from the pipeline's state at each scrape.

The names fixed by the design: ``mllearner_samples_total{model}``,
``mllearner_feedback_total{model,outcome}`` (joined, late, unknown, invalid, and duplicate),
``mllearner_prequential{model,metric}``, ``mllearner_snapshot_version{model}``. The others tell
where rows are waiting and whether storage answers.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, TypeVar

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from mlserving.learning.pipeline import LearningPipeline


class LearnerCollector(Collector):
    def __init__(self, pipeline: LearningPipeline) -> None:
        self.pipeline = pipeline

    def collect(self) -> Iterator[Metric]:
        yield from self._learning()
        yield from self._flow()
        yield from self._storage()

    def _counter(self, name: str, doc: str, value: float) -> CounterMetricFamily:
        return _one(CounterMetricFamily(name, doc, labels=["model"]), self.model, value)

    def _gauge(self, name: str, doc: str, value: float) -> GaugeMetricFamily:
        return _one(GaugeMetricFamily(name, doc, labels=["model"]), self.model, value)

    @property
    def model(self) -> str:
        return self.pipeline.config.model_label

    def _learning(self) -> Iterator[Metric]:
        p = self.pipeline
        yield self._counter(
            "mllearner_samples", "Labelled samples learned (partial_fit) by the model.", p.learner.samples
        )
        feedback = CounterMetricFamily(
            "mllearner_feedback", "Feedback received, by outcome.", labels=["model", "outcome"]
        )
        for outcome, count in p.buffer.stats.feedback_outcomes().items():
            feedback.add_metric([self.model, outcome], count)
        yield feedback
        prequential = GaugeMetricFamily(
            "mllearner_prequential",
            "Prequential (test-then-train) metrics over the window of recent samples.",
            labels=["model", "metric"],
        )
        for metric, value in p.learner.metrics.items():
            prequential.add_metric([self.model, metric], value)
        yield prequential
        if p.snapshot_version is not None:
            yield self._gauge("mllearner_snapshot_version", "Newest published snapshot.", p.snapshot_version)
        yield self._counter("mllearner_learn_errors", "Batches partial_fit refused.", p.learner.errors)
        yield self._counter(
            "mllearner_snapshots_skipped",
            "Snapshots never published because newer ones waited.",
            p.skipped_snapshots,
        )

    def _flow(self) -> Iterator[Metric]:
        p = self.pipeline
        stats = p.buffer.stats
        logged = CounterMetricFamily(
            "mllearner_logged_requests",
            "Logged requests received from serving replicas, by outcome.",
            labels=["model", "outcome"],
        )
        for outcome, count in (
            ("accepted", stats.logged),
            ("relogged", stats.relogged),
            ("rejected", p.rejected_records),
        ):
            logged.add_metric([self.model, outcome], count)
        yield logged
        yield self._counter(
            "mllearner_requests_expired",
            "Logged requests that got no feedback within max delay.",
            stats.expired,
        )
        yield self._counter(
            "mllearner_requests_evicted", "Logged requests dropped to bound memory.", stats.evicted
        )
        yield self._gauge(
            "mllearner_waiting_requests", "Logged requests waiting for feedback.", len(p.buffer)
        )
        yield self._gauge(
            "mllearner_unwritten_rows", "Joined rows not yet written to the data log.", p.unwritten_rows
        )
        yield self._gauge(
            "mllearner_pending_samples", "Written rows waiting to fill a batch.", p.learner.pending
        )

    def _storage(self) -> Iterator[Metric]:
        p = self.pipeline
        if p.datalog.version is not None:
            yield self._gauge(
                "mllearner_data_version", "Delta table version of the production-data log.", p.datalog.version
            )
        yield self._gauge(
            "mllearner_storage_available",
            "1 while the storage answers, 0 after a failure.",
            int(p.storage.available),
        )
        errors = CounterMetricFamily(
            "mllearner_storage_errors",
            "Failed storage operations, by operation.",
            labels=["model", "operation"],
        )
        for operation, count in sorted(p.storage.errors.items()):
            errors.add_metric([self.model, operation], count)
        yield errors


_Family = TypeVar("_Family", CounterMetricFamily, GaugeMetricFamily)


def _one(family: _Family, model: str, value: float) -> _Family:
    family.add_metric([model], value)
    return family


def learner_registry(pipeline: LearningPipeline) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(LearnerCollector(pipeline))
    return registry
