"""Always-valid frequentist inference: the normal-mixture sequential probability ratio test.

For an estimate ``delta`` of a difference of means with variance ``v`` (approximately normal), the
likelihood ratio of "difference ~ N(0, tau2)" against "difference = 0" is

    Lambda = sqrt(v / (v + tau2)) * exp(tau2 * delta**2 / (2 * v * (v + tau2))).

Under the null it is a nonnegative martingale in information time, so by Ville's inequality
``P(Lambda ever reaches 1/alpha) <= alpha``: ``p = min(1, 1/Lambda)`` is a p-value that stays
valid however often the experiment is looked at, and inverting the test gives a confidence
sequence (an interval valid at all times at once). Robbins (1970); Johari, Pekelis and Walsh,
"Always valid inference" (2017).

All functions are vectorised over numpy arrays so that thousands of simulated experiments can be
checked at once.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

FloatArray = NDArray[np.float64]


def log_mixture_likelihood_ratio(delta: ArrayLike, variance: ArrayLike, tau2: ArrayLike) -> FloatArray:
    """``log Lambda`` of the normal-mixture SPRT; ``+inf`` for a nonzero delta of zero variance."""
    d = np.asarray(delta, dtype=np.float64)
    v = np.asarray(variance, dtype=np.float64)
    t = np.asarray(tau2, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        value = 0.5 * np.log(v / (v + t)) + t * d * d / (2 * v * (v + t))
    degenerate = v <= 0
    value = np.where(degenerate & (d != 0), np.inf, value)
    value = np.where(degenerate & (d == 0), 0.0, value)
    return np.asarray(value, dtype=np.float64)


def always_valid_p_value(delta: ArrayLike, variance: ArrayLike, tau2: ArrayLike) -> FloatArray:
    """``min(1, 1 / Lambda)``: valid at any (data-dependent) time the experiment stops."""
    log_lr = log_mixture_likelihood_ratio(delta, variance, tau2)
    return np.asarray(np.minimum(1.0, np.exp(-log_lr)), dtype=np.float64)


def confidence_sequence_half_width(variance: ArrayLike, tau2: ArrayLike, alpha: float) -> FloatArray:
    """Half-width of the always-valid (1 - alpha) confidence sequence around the estimate.

    All differences ``d`` with ``Lambda(estimate - d) < 1/alpha`` are kept:
    ``(estimate - d)**2 <= 2 v (v + tau2) / tau2 * (log(1/alpha) + log((v + tau2) / v) / 2)``.
    """
    v = np.asarray(variance, dtype=np.float64)
    t = np.asarray(tau2, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        width = np.sqrt(2 * v * (v + t) / t * (np.log(1 / alpha) + 0.5 * np.log((v + t) / v)))
    return np.asarray(np.where(v <= 0, 0.0, width), dtype=np.float64)


def holm_adjust(p_values: ArrayLike) -> FloatArray:
    """Holm step-down adjusted p-values along the last axis (controls the family-wise error).

    Valid for always-valid p-values read at a common stopping time, whatever their dependence.
    """
    p = np.asarray(p_values, dtype=np.float64)
    m = p.shape[-1]
    order = np.argsort(p, axis=-1, kind="stable")
    sorted_p = np.take_along_axis(p, order, axis=-1)
    factors = m - np.arange(m, dtype=np.float64)
    adjusted_sorted = np.minimum(1.0, np.maximum.accumulate(sorted_p * factors, axis=-1))
    adjusted = np.empty_like(adjusted_sorted)
    np.put_along_axis(adjusted, order, adjusted_sorted, axis=-1)
    return adjusted


def bernoulli_difference(
    n_a: ArrayLike, mean_a: ArrayLike, n_b: ArrayLike, mean_b: ArrayLike, effect_size: float
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Difference ``mean_a - mean_b`` of two rates, its null variance, and the mixing variance.

    Under the null the two rates are equal, so the variance uses the pooled rate ``p``:
    ``p (1 - p) (1/n_a + 1/n_b)`` (an upper bound for fractional rewards). The mixing variance is
    ``(effect_size * sd)**2`` with the pooled per-request standard deviation ``sd``.
    """
    na = np.asarray(n_a, dtype=np.float64)
    nb = np.asarray(n_b, dtype=np.float64)
    ma = np.asarray(mean_a, dtype=np.float64)
    mb = np.asarray(mean_b, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        pooled = (na * ma + nb * mb) / (na + nb)
        unit_variance = pooled * (1 - pooled)
        variance = unit_variance * (1 / na + 1 / nb)
    return (
        np.asarray(ma - mb, dtype=np.float64),
        np.asarray(np.nan_to_num(variance, nan=0.0), dtype=np.float64),
        np.asarray(np.nan_to_num(effect_size**2 * unit_variance, nan=0.0), dtype=np.float64),
    )


def gaussian_difference(
    n_a: ArrayLike,
    mean_a: ArrayLike,
    var_a: ArrayLike,
    n_b: ArrayLike,
    mean_b: ArrayLike,
    var_b: ArrayLike,
    effect_size: float,
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Difference ``mean_a - mean_b`` of two means, its (Welch) variance, and the mixing variance
    ``(effect_size * sd)**2`` with ``sd`` the average of the two per-observation deviations."""
    na = np.asarray(n_a, dtype=np.float64)
    nb = np.asarray(n_b, dtype=np.float64)
    va = np.asarray(var_a, dtype=np.float64)
    vb = np.asarray(var_b, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        variance = va / na + vb / nb
    unit_variance = (va + vb) / 2
    delta = np.asarray(mean_a, dtype=np.float64) - np.asarray(mean_b, dtype=np.float64)
    return (
        np.asarray(delta, dtype=np.float64),
        np.asarray(np.nan_to_num(variance, nan=0.0), dtype=np.float64),
        np.asarray(effect_size**2 * unit_variance, dtype=np.float64),
    )
