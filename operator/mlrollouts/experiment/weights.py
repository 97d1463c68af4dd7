"""From a policy's target split to the weights actually applied: guardrails, floor, smoothing.

Order of precedence: a variant that failed its guardrails gets 0 at once; every healthy variant
gets at least its floor at once; only then are the policy's changes limited to ``max_step`` per
evaluation, by moving along the straight line from the current split to the target (which keeps
the sum at 1 and the floor, as both ends satisfy them).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.float64]
BoolArray = NDArray[np.bool_]


def effective_floors(floors: FloatArray, healthy: BoolArray) -> FloatArray:
    """Per-variant floors of the healthy variants (0 for failed ones), scaled down proportionally
    when they add up to more than the whole."""
    f = np.where(healthy, np.clip(floors, 0.0, None), 0.0)
    total = float(f.sum())
    return np.asarray(f / total if total > 1 else f, dtype=np.float64)


def apply_floor_to_target(target: FloatArray, healthy: BoolArray, floors: FloatArray) -> FloatArray:
    """Normalise ``target`` over the healthy variants and mix in the floors: ``f + (1 - sum f) t``."""
    k = int(healthy.sum())
    if k == 0:
        return np.zeros_like(target, dtype=np.float64)
    t = np.where(healthy, np.clip(target, 0.0, None), 0.0)
    total = t.sum()
    t = t / total if total > 0 else healthy / k
    f = effective_floors(floors, healthy)
    return np.asarray(np.where(healthy, f + (1 - f.sum()) * t, 0.0), dtype=np.float64)


def lift_to_floor(weights: FloatArray, healthy: BoolArray, floors: FloatArray) -> FloatArray | None:
    """Current weights restricted to healthy variants, renormalised, with every one at least its
    floor (the shortfall is taken from the variants above theirs, in proportion to their excess).
    ``None`` when the healthy variants have no weight at all."""
    w: FloatArray = np.asarray(np.where(healthy, np.clip(weights, 0.0, None), 0.0), dtype=np.float64)
    total = w.sum()
    if not healthy.any() or total <= 0:
        return None
    w = w / total
    f = effective_floors(floors, healthy)
    deficit = float(np.clip(f - w, 0.0, None).sum())
    if deficit <= 0:
        return w
    excess = np.clip(w - f, 0.0, None)
    scale = 1.0 - deficit / excess.sum() if excess.sum() > 0 else 0.0
    return np.asarray(np.where(healthy, np.where(w > f, f + excess * scale, f), 0.0), dtype=np.float64)


def smooth(current: FloatArray, target: FloatArray, max_step: float) -> FloatArray:
    """Move from ``current`` towards ``target`` so no weight changes by more than ``max_step``."""
    change = target - current
    largest = float(np.abs(change).max()) if change.size else 0.0
    if largest <= max_step:
        return target.copy()
    return current + change * (max_step / largest)


def next_weights(
    target: FloatArray, current: FloatArray, healthy: BoolArray, floors: FloatArray, max_step: float
) -> FloatArray:
    """The split to apply: guardrails and floors immediately, policy moves limited by ``max_step``."""
    goal = apply_floor_to_target(target, healthy, floors)
    start = lift_to_floor(current, healthy, floors)
    if start is None:
        # Nothing to move from (first evaluation, or every weighted variant just failed).
        return goal
    result = smooth(start, goal, max_step)
    result = np.where(healthy, np.clip(result, 0.0, None), 0.0)
    return np.asarray(result / result.sum(), dtype=np.float64)


def to_integer_weights(weights: FloatArray, total: int = 100) -> NDArray[np.int64]:
    """Round fractions to integers summing to ``total`` (largest remainder); zero stays zero.

    Each value is at least the integer part of its share, so integer floors (percent) survive.
    """
    if total <= 0:
        raise ValueError(f"total: must be > 0, got {total}")
    w = np.clip(np.asarray(weights, dtype=np.float64), 0.0, None)
    if w.sum() <= 0:
        return np.zeros(w.shape, dtype=np.int64)
    scaled = w / w.sum() * total
    # The tiny slack keeps 0.05 * 100 = 4.999... from rounding below a 5 % floor.
    result = np.floor(scaled + 1e-9).astype(np.int64)
    remainder = np.where(w > 0, np.clip(scaled - result, 0.0, None), -1.0)
    missing = total - int(result.sum())
    if missing > 0:
        order = np.argsort(-remainder, kind="stable")
        result[order[:missing]] += 1
    return np.asarray(result, dtype=np.int64)
