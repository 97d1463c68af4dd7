"""Prequential (test-then-train) metrics over a sliding window of the most recent samples.

Every sample is first predicted by the model as it is, scored, and only then learned from, so the
score measures the model on data it has not seen. Classifiers report ``accuracy`` and, when they
give probabilities, ``logLoss``; regressors report ``mae`` and ``rmse`` (the metric names of
``spec.learning.guard.metric``).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

# Probabilities are clipped as scikit-learn's log_loss does, so one confident miss is finite.
_EPS = 1e-15


class Prequential:
    """Per-sample losses in ring buffers of ``window`` samples; ``values()`` averages them."""

    def __init__(self, window: int, *, classifier: bool) -> None:
        if window < 1:
            raise ValueError(f"window: must be at least 1 sample, got {window}")
        self.window = int(window)
        self.classifier = classifier
        self.total = 0  # samples scored since the model's first snapshot
        self._pos = 0
        self._filled = 0
        # classifier: [correct, log loss]; regressor: [absolute error, squared error].
        self._losses = np.zeros((2, self.window), dtype=np.float64)
        # Whether each sample had a probability (log loss is reported only when all in window had).
        self._has_proba = np.zeros(self.window, dtype=bool)

    def update_classification(
        self, y_true: np.ndarray, y_pred: np.ndarray, proba: np.ndarray | None, classes: np.ndarray
    ) -> None:
        correct = (np.asarray(y_true) == np.asarray(y_pred)).astype(np.float64)
        if proba is None:
            self._write(correct, np.zeros_like(correct), has_proba=False)
            return
        index = np.searchsorted(classes, y_true)
        picked = np.asarray(proba, dtype=np.float64)[np.arange(len(index)), index]
        self._write(correct, -np.log(np.clip(picked, _EPS, 1.0 - _EPS)), has_proba=True)

    def update_regression(self, y_true: np.ndarray, y_pred: np.ndarray) -> None:
        error = np.asarray(y_true, dtype=np.float64).reshape(-1) - np.asarray(
            y_pred, dtype=np.float64
        ).reshape(-1)
        self._write(np.abs(error), error * error, has_proba=False)

    def values(self) -> dict[str, float]:
        """The window's metrics; empty before the first sample."""
        n = self._filled
        if n == 0:
            return {}
        first, second = self._losses[0, :n], self._losses[1, :n]
        if not self.classifier:
            return {"mae": float(first.mean()), "rmse": math.sqrt(float(second.mean()))}
        result = {"accuracy": float(first.mean())}
        if self._has_proba[:n].all():
            result["logLoss"] = float(second.mean())
        return result

    @property
    def count(self) -> int:
        """Samples currently in the window."""
        return self._filled

    def _write(self, first: np.ndarray, second: np.ndarray, *, has_proba: bool) -> None:
        k = len(first)
        self.total += k
        if k >= self.window:
            first, second = first[-self.window :], second[-self.window :]
            k = self.window
        slots = (self._pos + np.arange(k)) % self.window
        self._losses[0, slots] = first
        self._losses[1, slots] = second
        self._has_proba[slots] = has_proba
        self._pos = int((self._pos + k) % self.window)
        self._filled = min(self.window, self._filled + k)

    # ---------------------------------------------------------------- persistence

    def state(self) -> dict[str, Any]:
        return {
            "window": self.window,
            "classifier": self.classifier,
            "total": self.total,
            "pos": self._pos,
            "filled": self._filled,
            "losses": self._losses.copy(),
            "has_proba": self._has_proba.copy(),
        }

    @classmethod
    def from_state(cls, state: dict[str, Any], *, window: int | None = None) -> Prequential:
        """Restore; a different ``window`` keeps the most recent samples that fit."""
        restored = cls(int(state["window"]), classifier=bool(state["classifier"]))
        restored.total = int(state["total"])
        restored._pos = int(state["pos"])
        restored._filled = int(state["filled"])
        restored._losses = np.asarray(state["losses"], dtype=np.float64).copy()
        restored._has_proba = np.asarray(state["has_proba"], dtype=bool).copy()
        if window is None or window == restored.window:
            return restored
        resized = cls(window, classifier=restored.classifier)
        order = (restored._pos - restored._filled + np.arange(restored._filled)) % restored.window
        keep = min(window, restored._filled)
        if keep:
            resized._write(restored._losses[0, order], restored._losses[1, order], has_proba=False)
            resized._has_proba[:keep] = restored._has_proba[order][-keep:]
        resized.total = restored.total
        return resized
