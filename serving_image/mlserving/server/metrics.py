"""Prometheus metrics of the model server (names fixed by the design; analysis templates use them).

``model`` and ``revision`` labels come from ``MLSERVING_MODEL`` / ``MLSERVING_REVISION``.

Prediction distribution (``mlserving_predictions_total{output,bucket}``), used for drift (PSI):

- classifiers: ``bucket`` is the predicted label;
- regressors: fixed, data-independent bins on a 1-2-5 series, symmetric around zero. A value ``v``
  falls in the bin named by its lower edge ``e`` (``e <= |v| < next edge``), with the sign of ``v``:
  ``0`` (|v| < 0.001), ``0.001``, ``0.002``, ``0.005``, ``0.01``, ... ``5e+08``, ``1e+09`` (|v| >= 1e9),
  and ``-0.001`` ... for negative values; ``nan`` for NaN. The same bins on every revision make the
  distributions of a candidate and its stable revision directly comparable.

At most ``MAX_BUCKETS`` distinct buckets are kept per output; further values count as ``other``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from mlserving.metrics import MetricFactory, RewardMetrics

MAX_BUCKETS = 200

DURATION_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 1024, 4096)

_EDGES = np.array([m * 10.0**k for k in range(-3, 9) for m in (1, 2, 5)] + [1e9])
_EDGE_LABELS = [f"{e:g}" for e in _EDGES]


def value_buckets(values: np.ndarray) -> list[str]:
    """Bin names of numeric predictions (see the module docstring)."""
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    mag = np.abs(v)
    idx = np.searchsorted(_EDGES, mag, side="right") - 1
    names = []
    for value, i in zip(v.tolist(), idx.tolist(), strict=True):
        if value != value:
            names.append("nan")
        elif i < 0:
            names.append("0")
        else:
            names.append(("-" if value < 0 else "") + _EDGE_LABELS[i])
    return names


class ServerMetrics:
    def __init__(self, model: str, revision: str, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        self.model = model
        self.revision = revision

        metric = MetricFactory(self.registry, "model", "revision")
        self.requests = metric(
            Counter, "mlserving_requests", "Inference requests by HTTP status code.", "code"
        )
        self.duration = metric(
            Histogram,
            "mlserving_request_duration_seconds",
            "Inference request duration (body received to response sent).",
            buckets=DURATION_BUCKETS,
        )
        self.predictions = metric(
            Counter,
            "mlserving_predictions",
            "Predictions by output and bucket (label for classifiers, fixed bins for regressors).",
            "output",
            "bucket",
        )
        self.rewards = RewardMetrics(metric, "mlserving", "accepted")
        self.feedback_correct = metric(
            Counter,
            "mlserving_feedback_labels",
            "Labelled feedback, by whether the served prediction was correct.",
            "correct",
        )
        self.load_failures = metric(
            Counter, "mlserving_model_load_failures", "Failed attempts to fetch or load the model."
        )
        self.native_fallback = metric(
            Counter,
            "mlserving_native_fallback",
            "Models served natively because ONNX compilation was impossible or its outputs differed.",
            "reason",
        )
        self.ready = metric(Gauge, "mlserving_model_ready", "1 when the model is loaded and serving.")
        self.batch_rows = metric(
            Histogram,
            "mlserving_batch_rows",
            "Rows per model call (after adaptive batching).",
            buckets=BATCH_BUCKETS,
        )
        self.load_seconds = metric(Gauge, "mlserving_model_load_seconds", "Time to fetch and load the model.")
        lv = (model, revision)
        self._duration = self.duration.labels(*lv)
        self._codes: dict[int, object] = {}
        self._buckets: dict[tuple[str, str], object] = {}
        self._bucket_count: dict[str, int] = {}
        self.rewards.feedback.labels(*lv)
        self.rewards.reward.labels(*lv)
        self.rewards.reward_squares.labels(*lv)
        self.load_failures_child = self.load_failures.labels(*lv)
        self.ready_child = self.ready.labels(*lv)
        self.batch_child = self.batch_rows.labels(*lv)
        self.load_seconds_child = self.load_seconds.labels(*lv)
        # Series that exist from the start, so rate() and absent() behave before the first event.
        for code in (200, 400, 500):
            self._code(code)
        self.ready_child.set(0)

    def _code(self, code: int):  # type: ignore[no-untyped-def]
        child = self._codes.get(code)
        if child is None:
            child = self._codes[code] = self.requests.labels(self.model, self.revision, str(code))
        return child

    def observe_request(self, code: int, seconds: float) -> None:
        self._code(code).inc()
        self._duration.observe(seconds)

    def observe_feedback(self, reward: float | None, correct: bool | None) -> None:
        self.rewards.observe(reward, self.model, self.revision)
        if correct is not None:
            self.feedback_correct.labels(self.model, self.revision, "true" if correct else "false").inc()

    def observe_predictions(self, output: str, values: np.ndarray) -> None:
        if values.ndim > 1:
            if values.shape[1] != 1:
                return
            values = values.reshape(-1)
        if values.size == 0:
            return
        if values.dtype.kind == "f":
            names = value_buckets(values)
        elif values.dtype.kind == "O":
            names = [v.decode(errors="replace") if isinstance(v, bytes) else str(v) for v in values.tolist()]
        else:
            names = [str(v) for v in values.tolist()]
        if len(names) == 1:
            self._bucket(output, names[0]).inc()
            return
        counts: dict[str, int] = {}
        for name in names:
            counts[name] = counts.get(name, 0) + 1
        for name, n in counts.items():
            self._bucket(output, name).inc(n)

    def _bucket(self, output: str, name: str):  # type: ignore[no-untyped-def]
        key = (output, name)
        child = self._buckets.get(key)
        if child is None:
            if self._bucket_count.get(output, 0) >= MAX_BUCKETS:
                key = (output, "other")
                child = self._buckets.get(key)
                if child is not None:
                    return child
            else:
                self._bucket_count[output] = self._bucket_count.get(output, 0) + 1
            child = self._buckets[key] = self.predictions.labels(self.model, self.revision, output, key[1])
        return child


class LearningMetrics:
    """Online learning in a replica: the request log sent to the learner, and the snapshot served.

    Registered only when learning is configured, so a server without it exposes what it always did.
    ``mlserving_snapshot_version`` is -1 while the model of ``--model-uri`` is served (no snapshot yet).
    """

    def __init__(self, registry: CollectorRegistry, model: str) -> None:
        self.model = model
        metric = MetricFactory(registry, "model")
        self.snapshot_version = metric(
            Gauge, "mlserving_snapshot_version", "Snapshot of the online learner served (-1: none yet)."
        ).labels(model)
        self.snapshot_version.set(-1)
        self.snapshot_loads = metric(
            Counter, "mlserving_snapshot_loads", "Snapshots verified, loaded and swapped in."
        ).labels(model)
        self.snapshot_refused = metric(
            Counter,
            "mlserving_snapshot_refused",
            "Snapshots refused (signature, checksum, unloadable or incompatible model); serving unchanged.",
        ).labels(model)
        self.snapshot_poll_errors = metric(
            Counter, "mlserving_snapshot_poll_errors", "Failed reads of the snapshot storage."
        ).labels(model)
        self.snapshot_load_seconds = metric(
            Gauge, "mlserving_snapshot_load_seconds", "Time to fetch, verify and load the last snapshot."
        ).labels(model)
        self.feedback_forwarded = metric(
            Counter,
            "mlserving_learning_feedback_forwarded",
            "Labelled feedback forwarded to the learner, by its answer (0: unreachable).",
            "code",
        )


class RequestLogCollector:
    """The counters of a request log (kept as plain integers on the inference path) as metrics."""

    def __init__(self, model: str, counts: Callable[[], Mapping[str, int]]) -> None:
        self.model = model
        self._counts = counts

    def collect(self) -> Iterator[Metric]:
        counts = self._counts()
        for name, documentation in _REQUEST_LOG_COUNTERS.items():
            family = CounterMetricFamily(f"mlserving_learning_log_{name}", documentation, labels=["model"])
            family.add_metric([self.model], counts.get(name, 0))
            yield family
        queued = GaugeMetricFamily(
            "mlserving_learning_log_queued", "Logged requests waiting to be sent.", labels=["model"]
        )
        queued.add_metric([self.model], counts.get("queued", 0))
        yield queued


_REQUEST_LOG_COUNTERS = {
    "records": "Served requests logged for the learner.",
    "sent": "Logged requests the learner accepted.",
    "refused": "Logged requests the learner refused as malformed.",
    "dropped": "Logged requests dropped because the queue was full (the learner was slow or away).",
    "send_failures": "Posts of a batch to the learner that failed and were retried.",
}
