"""Prequential metrics over a sliding window, checked against scikit-learn's metric functions."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import log_loss, mean_absolute_error, mean_squared_error

from mlserving.learning.prequential import Prequential

CLASSES = np.array([0, 1, 2])


def test_accuracy_covers_only_the_window():
    metrics = Prequential(4, classifier=True)
    metrics.update_classification(np.array([0, 1, 2]), np.array([0, 1, 2]), None, CLASSES)
    assert metrics.values() == {"accuracy": 1.0}
    metrics.update_classification(np.array([0, 0, 0]), np.array([1, 1, 0]), None, CLASSES)
    # The window holds the last 4: [correct, miss, miss, correct].
    assert metrics.values() == {"accuracy": 0.5}
    assert metrics.total == 6
    assert metrics.count == 4


def test_log_loss_matches_scikit_learn_on_the_window():
    rng = np.random.default_rng(1)
    proba = rng.dirichlet(np.ones(3), size=50)
    y_true = rng.integers(0, 3, size=50)
    metrics = Prequential(20, classifier=True)
    for start in range(0, 50, 7):
        part = slice(start, start + 7)
        metrics.update_classification(y_true[part], np.argmax(proba[part], axis=1), proba[part], CLASSES)
    expected = log_loss(y_true[-20:], proba[-20:], labels=CLASSES)
    assert metrics.values()["logLoss"] == pytest.approx(expected, rel=1e-12)
    accuracy = float(np.mean(np.argmax(proba[-20:], axis=1) == y_true[-20:]))
    assert metrics.values()["accuracy"] == pytest.approx(accuracy)


def test_log_loss_is_left_out_while_a_sample_in_the_window_had_no_probability():
    metrics = Prequential(3, classifier=True)
    metrics.update_classification(np.array([0]), np.array([0]), None, CLASSES)
    proba = np.array([[0.8, 0.1, 0.1], [0.2, 0.7, 0.1], [0.1, 0.1, 0.8]])
    metrics.update_classification(np.array([0, 1]), np.array([0, 1]), proba[:2], CLASSES)
    assert "logLoss" not in metrics.values()
    metrics.update_classification(np.array([2]), np.array([2]), proba[2:], CLASSES)
    assert metrics.values()["logLoss"] == pytest.approx(-np.mean(np.log([0.8, 0.7, 0.8])))


def test_a_confident_miss_gives_a_finite_log_loss():
    metrics = Prequential(1, classifier=True)
    metrics.update_classification(np.array([1]), np.array([0]), np.array([[1.0, 0.0, 0.0]]), CLASSES)
    assert math.isfinite(metrics.values()["logLoss"])
    assert metrics.values()["logLoss"] > 30


def test_regression_mae_and_rmse_match_scikit_learn():
    rng = np.random.default_rng(2)
    y_true, y_pred = rng.normal(size=40), rng.normal(size=40)
    metrics = Prequential(25, classifier=False)
    metrics.update_regression(y_true[:30], y_pred[:30])
    metrics.update_regression(y_true[30:], y_pred[30:])
    values = metrics.values()
    assert values["mae"] == pytest.approx(mean_absolute_error(y_true[-25:], y_pred[-25:]))
    assert values["rmse"] == pytest.approx(math.sqrt(mean_squared_error(y_true[-25:], y_pred[-25:])))
    assert set(values) == {"mae", "rmse"}


def test_a_batch_larger_than_the_window_keeps_its_last_samples():
    metrics = Prequential(3, classifier=False)
    metrics.update_regression(np.arange(10.0), np.zeros(10))
    assert metrics.values()["mae"] == pytest.approx(8.0)  # mean of 7, 8, 9
    assert metrics.total == 10


def test_nothing_scored_means_no_metrics():
    assert Prequential(5, classifier=True).values() == {}


def test_state_round_trip_and_a_smaller_window_keeps_the_newest():
    metrics = Prequential(5, classifier=False)
    metrics.update_regression(np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0]), np.zeros(6))
    restored = Prequential.from_state(metrics.state())
    assert restored.values() == metrics.values()
    assert restored.total == 6
    smaller = Prequential.from_state(metrics.state(), window=2)
    assert smaller.values()["mae"] == pytest.approx(5.5)  # 5 and 6
    assert smaller.total == 6
    smaller.update_regression(np.array([10.0]), np.zeros(1))
    assert smaller.values()["mae"] == pytest.approx(8.0)  # 6 and 10


def test_a_window_below_one_is_refused():
    with pytest.raises(ValueError, match="window"):
        Prequential(0, classifier=True)
