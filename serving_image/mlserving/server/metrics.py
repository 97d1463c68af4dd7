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

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics

# The *_created series double the exposition size and no query of the project uses them.
disable_created_metrics()

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
        labels = ("model", "revision")
        r = self.registry
        self.requests = Counter(
            "mlserving_requests", "Inference requests by HTTP status code.", (*labels, "code"), registry=r
        )
        self.duration = Histogram(
            "mlserving_request_duration_seconds",
            "Inference request duration (body received to response sent).",
            labels,
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.predictions = Counter(
            "mlserving_predictions",
            "Predictions by output and bucket (label for classifiers, fixed bins for regressors).",
            (*labels, "output", "bucket"),
            registry=r,
        )
        self.feedback = Counter("mlserving_feedback", "Feedback events accepted.", labels, registry=r)
        self.reward = Gauge(
            "mlserving_reward_sum", "Sum of rewards received as feedback.", labels, registry=r
        )
        # Sum of squared rewards, for the mean and variance of unbounded (Gaussian) rewards.
        self.reward_squares = Gauge(
            "mlserving_reward_sum_squares", "Sum of squared rewards received as feedback.", labels, registry=r
        )
        self.feedback_correct = Counter(
            "mlserving_feedback_labels",
            "Labelled feedback, by whether the served prediction was correct.",
            (*labels, "correct"),
            registry=r,
        )
        self.load_failures = Counter(
            "mlserving_model_load_failures", "Failed attempts to fetch or load the model.", labels, registry=r
        )
        self.native_fallback = Counter(
            "mlserving_native_fallback",
            "Models served natively because ONNX compilation was impossible or its outputs differed.",
            (*labels, "reason"),
            registry=r,
        )
        self.ready = Gauge(
            "mlserving_model_ready", "1 when the model is loaded and serving.", labels, registry=r
        )
        self.batch_rows = Histogram(
            "mlserving_batch_rows",
            "Rows per model call (after adaptive batching).",
            labels,
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.load_seconds = Gauge(
            "mlserving_model_load_seconds", "Time to fetch and load the model.", labels, registry=r
        )
        lv = (model, revision)
        self._duration = self.duration.labels(*lv)
        self._codes: dict[int, object] = {}
        self._buckets: dict[tuple[str, str], object] = {}
        self._bucket_count: dict[str, int] = {}
        self.feedback_child = self.feedback.labels(*lv)
        self.reward_child = self.reward.labels(*lv)
        self.reward_squares_child = self.reward_squares.labels(*lv)
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
