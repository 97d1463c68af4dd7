"""Tiny online models trained from scikit-learn data sets, and helpers to build logged requests."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mlserving.learning.records import LoggedRequest

KEY = b"unit-test-signing-key-0123456789"


@dataclass(frozen=True)
class Dataset:
    x: np.ndarray
    y: np.ndarray


def load_dataset(name: str) -> Dataset:
    """``iris`` (shuffled once: the file is ordered by class) or ``diabetes``."""
    from sklearn.datasets import load_diabetes, load_iris

    if name == "iris":
        x, y = load_iris(return_X_y=True)
        order = np.random.default_rng(0).permutation(len(y))
        return Dataset(x[order], y[order])
    x, y = load_diabetes(return_X_y=True)
    return Dataset(x, y)


def fitted_sgd_classifier(data: Dataset, rows: int = 30) -> Any:
    from sklearn.linear_model import SGDClassifier

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return SGDClassifier(loss="log_loss", alpha=0.1, random_state=0).fit(data.x[:rows], data.y[:rows])


def fitted_sgd_regressor(data: Dataset, rows: int = 50) -> Any:
    from sklearn.linear_model import SGDRegressor

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return SGDRegressor(random_state=0).fit(data.x[:rows], data.y[:rows])


def save_skops(estimator: Any, path: Path) -> Path:
    import skops.io as sio

    path.parent.mkdir(parents=True, exist_ok=True)
    sio.dump(estimator, path)
    return path


def logged(
    response_id: str,
    features: Sequence[float] | np.ndarray,
    *,
    at: float = 1000.0,
    prediction: Any = None,
    snapshot: int | None = 0,
) -> LoggedRequest:
    array = np.asarray(features, dtype=np.float64)
    array = array.reshape(1, -1) if array.ndim == 1 else array
    predictions = tuple(prediction) if isinstance(prediction, list) else (prediction,) * array.shape[0]
    return LoggedRequest(response_id, array, predictions, snapshot, at)
