"""Split policies: each turns the healthy variants' data into a target split (before floor and
smoothing). All are pure functions of their arguments."""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray

from mlrollouts.experiment.config import (
    EpsilonGreedyPolicy,
    FixedPolicy,
    Policy,
    RewardModel,
    ThompsonSamplingPolicy,
    UCB1Policy,
)
from mlrollouts.experiment.posterior import SampleSummary

FloatArray = NDArray[np.float64]


def _split_among(mask: NDArray[np.bool_]) -> FloatArray:
    return np.asarray(mask / mask.sum(), dtype=np.float64)


def fixed_target(policy: FixedPolicy, names: list[str]) -> FloatArray:
    if not policy.weights:
        return np.full(len(names), 1.0 / len(names))
    raw = np.array([policy.weights.get(name, 0.0) for name in names], dtype=np.float64)
    # If the configured variants are all gone, fall back to an equal split of the rest.
    return raw / raw.sum() if raw.sum() > 0 else np.full(len(names), 1.0 / len(names))


def epsilon_greedy_target(
    policy: EpsilonGreedyPolicy, summaries: list[SampleSummary], intervals_elapsed: int
) -> FloatArray:
    """``1 - eps`` to the best observed mean (ties and untried variants share it), ``eps`` evenly."""
    k = len(summaries)
    epsilon = policy.epsilon
    if policy.decay is not None:
        epsilon *= policy.decay**intervals_elapsed
    means = np.array([s.mean if s.n > 0 else math.inf for s in summaries])
    best = means == means.max()
    return (1 - epsilon) * _split_among(best) + epsilon / k


def ucb1_target(policy: UCB1Policy, summaries: list[SampleSummary], reward_model: RewardModel) -> FloatArray:
    """Everything to the highest upper confidence bound (ties and untried variants share it)."""
    counts = np.array([s.n for s in summaries])
    if (counts == 0).any():
        return _split_among(counts == 0)
    means = np.array([s.mean for s in summaries])
    if reward_model is RewardModel.BERNOULLI:
        scale = 1.0
    else:
        dof = float(np.sum(counts - 1))
        scale = math.sqrt(sum(s.sum_squared_deviations for s in summaries) / dof) if dof > 0 else 1.0
    index = means + policy.exploration * scale * np.sqrt(2 * math.log(counts.sum()) / counts)
    return _split_among(index == index.max())


def target_split(
    policy: Policy,
    names: list[str],
    summaries: list[SampleSummary],
    probability_to_be_best: FloatArray,
    reward_model: RewardModel,
    intervals_elapsed: int = 0,
) -> FloatArray:
    """Target split over the given (healthy) variants; sums to 1."""
    match policy:
        case FixedPolicy():
            return fixed_target(policy, names)
        case EpsilonGreedyPolicy():
            return epsilon_greedy_target(policy, summaries, intervals_elapsed)
        case ThompsonSamplingPolicy():
            # Probability matching: each variant gets the posterior probability that it is best.
            return np.asarray(probability_to_be_best, dtype=np.float64)
        case UCB1Policy():
            return ucb1_target(policy, summaries, reward_model)
    raise TypeError(f"policy: unknown policy {type(policy).__name__}")
