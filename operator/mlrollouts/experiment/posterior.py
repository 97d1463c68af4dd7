"""Conjugate posteriors of a variant's mean reward, and Monte Carlo comparisons between variants.

Bernoulli rewards (in [0, 1]) get a Beta posterior: ``Beta(alpha + s, beta + n - s)`` where ``n``
is the number of eligible requests and ``s`` the reward sum, so a reward of 0.3 counts as 0.3 of a
success. Gaussian rewards get a normal-inverse-gamma posterior whose marginal for the mean is a
Student-t distribution.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy import special  # scipy.stats would add ~50 MB to the operator for two quantiles

from mlrollouts.experiment.config import (
    BetaPrior,
    NormalInverseGammaPrior,
    RewardModel,
    VariantObservation,
)

FloatArray = NDArray[np.float64]

# Relative slack for sums that come from floating-point counters (Prometheus).
_TOLERANCE = 1e-9


@dataclass(frozen=True)
class SampleSummary:
    """What the statistics use of a variant's data: sample size, mean, sum of squared deviations."""

    n: float
    mean: float
    sum_squared_deviations: float

    @property
    def variance(self) -> float:
        """Unbiased per-observation variance (0 with fewer than two observations)."""
        return self.sum_squared_deviations / (self.n - 1) if self.n > 1 else 0.0


def summarize(observation: VariantObservation, reward_model: RewardModel) -> SampleSummary:
    """Reduce counters to the sample summary of the reward model, validating their consistency."""
    where = f"variants[{observation.name!r}]"
    if reward_model is RewardModel.BERNOULLI:
        # Every eligible request is a trial; one without feedback is a failure. Counters scraped at
        # slightly different times can show more rewards than requests: trust the larger one.
        n = float(max(observation.requests, observation.reward_count))
        s = observation.reward_sum
        if s < 0 or s > observation.reward_count * (1 + _TOLERANCE):
            raise ValueError(
                f"{where}.rewardSum: {s} is outside [0, rewardCount={observation.reward_count}]; "
                "Bernoulli rewards must lie in [0, 1] (use the Gaussian reward model for others)"
            )
        s = min(s, n)
        mean = s / n if n > 0 else 0.0
        # For rewards in [0, 1] the sum of squares is at most the sum: p(1 - p) bounds the variance.
        return SampleSummary(n=n, mean=mean, sum_squared_deviations=n * mean * (1 - mean))
    n = float(observation.reward_count)
    if n == 0:
        return SampleSummary(n=0.0, mean=0.0, sum_squared_deviations=0.0)
    mean = observation.reward_sum / n
    ssd = observation.reward_sum_squares - n * mean * mean
    if ssd < -1e-6 * max(1.0, observation.reward_sum_squares):
        raise ValueError(
            f"{where}.rewardSumSquares: {observation.reward_sum_squares} is smaller than "
            f"rewardSum**2 / rewardCount = {n * mean * mean}; the counters are inconsistent"
        )
    return SampleSummary(n=n, mean=mean, sum_squared_deviations=max(ssd, 0.0))


@dataclass(frozen=True)
class BetaPosterior:
    """Posterior of a success rate: Beta(alpha, beta)."""

    alpha: float
    beta: float

    @classmethod
    def update(cls, prior: BetaPrior, summary: SampleSummary) -> BetaPosterior:
        successes = summary.n * summary.mean
        return cls(alpha=prior.alpha + successes, beta=prior.beta + summary.n - successes)

    @property
    def mean(self) -> float:
        return self.alpha / (self.alpha + self.beta)

    def interval(self, level: float) -> tuple[float, float]:
        """Equal-tailed credible interval."""
        tail = (1 - level) / 2
        low, high = (special.betaincinv(self.alpha, self.beta, q) for q in (tail, 1 - tail))
        return float(low), float(high)

    def draw(self, rng: np.random.Generator, size: int) -> FloatArray:
        return rng.beta(self.alpha, self.beta, size=size)


@dataclass(frozen=True)
class NormalInverseGammaPosterior:
    """Posterior of a Gaussian mean and variance: ``mean | var ~ N(mu, var / kappa)``,
    ``var ~ InvGamma(alpha, beta)``."""

    mu: float
    kappa: float
    alpha: float
    beta: float

    @classmethod
    def update(cls, prior: NormalInverseGammaPrior, summary: SampleSummary) -> NormalInverseGammaPosterior:
        n = summary.n
        kappa = prior.kappa + n
        mu = (prior.kappa * prior.mu + n * summary.mean) / kappa
        alpha = prior.alpha + n / 2
        beta = (
            prior.beta
            + summary.sum_squared_deviations / 2
            + prior.kappa * n * (summary.mean - prior.mu) ** 2 / (2 * kappa)
        )
        return cls(mu=mu, kappa=kappa, alpha=alpha, beta=beta)

    @property
    def mean(self) -> float:
        return self.mu

    @property
    def mean_distribution(self) -> tuple[float, float, float]:
        """Marginal posterior of the mean as Student-t: (degrees of freedom, location, scale)."""
        return 2 * self.alpha, self.mu, math.sqrt(self.beta / (self.alpha * self.kappa))

    def interval(self, level: float) -> tuple[float, float]:
        """Equal-tailed credible interval of the mean."""
        df, loc, scale = self.mean_distribution
        tail = (1 - level) / 2
        low, high = (loc + scale * special.stdtrit(df, q) for q in (tail, 1 - tail))
        return float(low), float(high)

    def draw(self, rng: np.random.Generator, size: int) -> FloatArray:
        """Draws of the mean from its marginal posterior."""
        df, loc, scale = self.mean_distribution
        return loc + scale * rng.standard_t(df, size=size)


Posterior = BetaPosterior | NormalInverseGammaPosterior


def posterior_of(
    summary: SampleSummary, reward_model: RewardModel, prior: BetaPrior | NormalInverseGammaPrior
) -> Posterior:
    if reward_model is RewardModel.BERNOULLI:
        assert isinstance(prior, BetaPrior)
        return BetaPosterior.update(prior, summary)
    assert isinstance(prior, NormalInverseGammaPrior)
    return NormalInverseGammaPosterior.update(prior, summary)


def best_arm_statistics(draws: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Probability to be best and expected loss of each arm from joint posterior draws.

    ``draws`` has shape (draws, arms). The expected loss of arm i is ``E[max_j mean_j - mean_i]``:
    the reward given up, on average under the posterior, by choosing i.
    """
    if draws.ndim != 2 or draws.shape[1] == 0:
        raise ValueError("draws: expected a (draws, arms) array with at least one arm")
    best = np.argmax(draws, axis=1)
    probability = np.bincount(best, minlength=draws.shape[1]) / draws.shape[0]
    loss = np.mean(draws.max(axis=1, keepdims=True) - draws, axis=0)
    return probability.astype(np.float64), loss.astype(np.float64)
