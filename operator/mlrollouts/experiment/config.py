"""Inputs of an experiment evaluation: observations per variant and the experiment's settings.

Plain frozen dataclasses, independent of the Kubernetes API models; the controller maps its
resources onto them. Every constructor validates its fields and raises ``ValueError`` naming the
field, so bad input never reaches the statistics.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum


class RewardModel(StrEnum):
    """How a variant's rewards are modelled."""

    #: Rewards in [0, 1] (clicks, conversions, fractional scores). Each eligible request is a
    #: trial and a fractional reward counts as that fraction of a success; requests without
    #: feedback count as reward 0.
    BERNOULLI = "Bernoulli"
    #: Unbounded real-valued rewards (revenue, latency saved). Only requests with feedback count,
    #: and the reward sum of squares is needed.
    GAUSSIAN = "Gaussian"


def _check_finite(name: str, value: float) -> None:
    if not math.isfinite(value):
        raise ValueError(f"{name}: must be a finite number, got {value!r}")


def _check_non_negative(name: str, value: float) -> None:
    _check_finite(name, value)
    if value < 0:
        raise ValueError(f"{name}: must be >= 0, got {value!r}")


@dataclass(frozen=True)
class VariantObservation:
    """Cumulative data of one variant since the experiment started.

    ``requests`` are the requests old enough to have received their reward (the caller leaves out
    those younger than ``rewardWait``); ``reward_count`` is the number of rewards received,
    ``reward_sum`` their sum and ``reward_sum_squares`` the sum of their squares (Gaussian only).
    ``guardrail_failed`` removes the variant from the split and from the contest. Counts may be
    fractional (Prometheus ``increase()`` extrapolates).
    """

    name: str
    requests: float = 0
    reward_count: float = 0
    reward_sum: float = 0.0
    reward_sum_squares: float = 0.0
    guardrail_failed: bool = False

    def __post_init__(self) -> None:
        where = f"variants[{self.name!r}]"
        if not self.name:
            raise ValueError("variants[].name: must not be empty")
        _check_finite(f"{where}.requests", self.requests)
        _check_finite(f"{where}.rewardCount", self.reward_count)
        if self.requests < 0:
            raise ValueError(f"{where}.requests: must be >= 0, got {self.requests}")
        if self.reward_count < 0:
            raise ValueError(f"{where}.rewardCount: must be >= 0, got {self.reward_count}")
        _check_finite(f"{where}.rewardSum", self.reward_sum)
        _check_non_negative(f"{where}.rewardSumSquares", self.reward_sum_squares)
        if self.reward_count == 0 and self.reward_sum != 0:
            raise ValueError(f"{where}.rewardSum: is {self.reward_sum} but rewardCount is 0")


@dataclass(frozen=True)
class BetaPrior:
    """Beta(alpha, beta) prior of a Bernoulli success rate; Beta(1, 1) is uniform."""

    alpha: float = 1.0
    beta: float = 1.0

    def __post_init__(self) -> None:
        for name, value in (("prior.alpha", self.alpha), ("prior.beta", self.beta)):
            _check_finite(name, value)
            if value <= 0:
                raise ValueError(f"{name}: must be > 0, got {value}")


@dataclass(frozen=True)
class NormalInverseGammaPrior:
    """Normal-inverse-gamma prior of a Gaussian mean and variance.

    ``mean ~ N(mu, variance / kappa)``, ``variance ~ InvGamma(alpha, beta)``. The defaults are
    nearly flat: the data dominate after a handful of rewards.
    """

    mu: float = 0.0
    kappa: float = 1e-3
    alpha: float = 1.0
    beta: float = 1e-3

    def __post_init__(self) -> None:
        _check_finite("prior.mu", self.mu)
        for name, value in (
            ("prior.kappa", self.kappa),
            ("prior.alpha", self.alpha),
            ("prior.beta", self.beta),
        ):
            _check_finite(name, value)
            if value <= 0:
                raise ValueError(f"{name}: must be > 0, got {value}")


Prior = BetaPrior | NormalInverseGammaPrior


@dataclass(frozen=True)
class FixedPolicy:
    """Constant split. ``weights`` maps variant names to relative weights; empty means equal."""

    weights: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name, value in self.weights.items():
            _check_non_negative(f"policy.weights[{name!r}]", value)


@dataclass(frozen=True)
class EpsilonGreedyPolicy:
    """Send ``1 - epsilon`` of the traffic to the best mean so far and spread ``epsilon`` evenly.

    With ``decay`` set, epsilon is multiplied by it once per elapsed interval:
    ``epsilon * decay ** intervals_elapsed``.
    """

    epsilon: float = 0.1
    decay: float | None = None

    def __post_init__(self) -> None:
        _check_finite("policy.epsilon", self.epsilon)
        if not 0 <= self.epsilon <= 1:
            raise ValueError(f"policy.epsilon: must be in [0, 1], got {self.epsilon}")
        if self.decay is not None and not (math.isfinite(self.decay) and 0 < self.decay <= 1):
            raise ValueError(f"policy.epsilonDecay: must be in (0, 1], got {self.decay}")


@dataclass(frozen=True)
class ThompsonSamplingPolicy:
    """Weights equal to the posterior probability that each variant is the best."""


@dataclass(frozen=True)
class UCB1Policy:
    """All traffic to the variant with the highest upper confidence bound.

    Index ``mean + exploration * scale * sqrt(2 ln N / n)`` where ``scale`` is 1 for Bernoulli
    rewards and the pooled standard deviation for Gaussian ones; untried variants come first.
    """

    exploration: float = 1.0

    def __post_init__(self) -> None:
        _check_non_negative("policy.exploration", self.exploration)


Policy = FixedPolicy | EpsilonGreedyPolicy | ThompsonSamplingPolicy | UCB1Policy


@dataclass(frozen=True)
class BayesianRule:
    """Conclude when one variant's posterior probability to be best reaches ``probability_to_be_best``
    and its expected loss (what choosing it costs, in reward units, if another is better) is at
    most ``expected_loss``."""

    probability_to_be_best: float = 0.95
    expected_loss: float = 0.001
    min_samples_per_variant: int = 100

    def __post_init__(self) -> None:
        _check_finite("decision.probabilityToBeBest", self.probability_to_be_best)
        if not 0 < self.probability_to_be_best <= 1:
            raise ValueError(
                f"decision.probabilityToBeBest: must be in (0, 1], got {self.probability_to_be_best}"
            )
        _check_non_negative("decision.expectedLoss", self.expected_loss)
        if self.min_samples_per_variant < 0:
            raise ValueError(
                f"decision.minSamplesPerVariant: must be >= 0, got {self.min_samples_per_variant}"
            )


@dataclass(frozen=True)
class FrequentistRule:
    """Conclude when one variant beats every other one in an always-valid sequential test.

    Each pair of variants gets a mixture sequential probability ratio test (mSPRT) on the
    difference of their means, valid however often it is looked at; the pairwise always-valid
    p-values are Holm-corrected so the chance of any false claim stays at most ``alpha``.
    ``effect_size`` is the standardised difference the test is tuned to find quickly (the mixing
    standard deviation, in units of the reward's standard deviation).
    """

    alpha: float = 0.05
    effect_size: float = 0.1
    min_samples_per_variant: int = 100

    def __post_init__(self) -> None:
        _check_finite("decision.alpha", self.alpha)
        if not 0 < self.alpha < 1:
            raise ValueError(f"decision.alpha: must be in (0, 1), got {self.alpha}")
        _check_finite("decision.effectSize", self.effect_size)
        if self.effect_size <= 0:
            raise ValueError(f"decision.effectSize: must be > 0, got {self.effect_size}")
        if self.min_samples_per_variant < 0:
            raise ValueError(
                f"decision.minSamplesPerVariant: must be >= 0, got {self.min_samples_per_variant}"
            )


DecisionRule = BayesianRule | FrequentistRule


@dataclass(frozen=True)
class ExperimentSettings:
    """Everything an evaluation needs besides the data.

    ``floor`` is the minimum weight of every healthy variant (keeps exploring), overridden per
    variant by ``variant_floors``; ``max_step`` the largest change of any variant's weight in one
    evaluation (1 means no limit). Weights are
    fractions summing to 1. ``posterior_draws`` Monte Carlo draws estimate the probabilities to be
    best and expected losses; ``credible_level`` is the level of the per-variant intervals.
    """

    policy: Policy = field(default_factory=ThompsonSamplingPolicy)
    reward_model: RewardModel = RewardModel.BERNOULLI
    prior: Prior | None = None
    decision: DecisionRule | None = field(default_factory=BayesianRule)
    floor: float = 0.0
    variant_floors: Mapping[str, float] = field(default_factory=dict)
    max_step: float = 1.0
    posterior_draws: int = 20_000
    credible_level: float = 0.95

    def __post_init__(self) -> None:
        _check_finite("floor", self.floor)
        if not 0 <= self.floor < 1:
            raise ValueError(f"floor: must be in [0, 1), got {self.floor}")
        for name, value in self.variant_floors.items():
            _check_finite(f"variants[{name!r}].floor", value)
            if not 0 <= value < 1:
                raise ValueError(f"variants[{name!r}].floor: must be in [0, 1), got {value}")
        _check_finite("maxStep", self.max_step)
        if not 0 < self.max_step <= 1:
            raise ValueError(f"maxStep: must be in (0, 1], got {self.max_step}")
        if self.posterior_draws < 100:
            raise ValueError(f"posteriorDraws: must be >= 100, got {self.posterior_draws}")
        if not 0 < self.credible_level < 1:
            raise ValueError(f"credibleLevel: must be in (0, 1), got {self.credible_level}")
        if self.prior is not None:
            expected = BetaPrior if self.reward_model is RewardModel.BERNOULLI else NormalInverseGammaPrior
            if not isinstance(self.prior, expected):
                raise ValueError(
                    f"prior: a {self.reward_model.value} reward model needs a {expected.__name__}, "
                    f"got {type(self.prior).__name__}"
                )

    def floor_of(self, name: str) -> float:
        return self.variant_floors.get(name, self.floor)

    @property
    def effective_prior(self) -> Prior:
        if self.prior is not None:
            return self.prior
        return BetaPrior() if self.reward_model is RewardModel.BERNOULLI else NormalInverseGammaPrior()
