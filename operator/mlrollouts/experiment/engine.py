"""One evaluation of an experiment: data in, next weights, per-variant status and a decision out.

The controller calls :func:`evaluate` every ``interval`` with the cumulative observations, the
weights currently applied and a seed (e.g. derived from the experiment's uid and the evaluation
number); the same arguments always give the same result.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

import numpy as np

from mlrollouts.experiment.config import (
    BayesianRule,
    ExperimentSettings,
    FrequentistRule,
    RewardModel,
    VariantObservation,
)
from mlrollouts.experiment.policies import target_split
from mlrollouts.experiment.posterior import (
    FloatArray,
    Posterior,
    SampleSummary,
    best_arm_statistics,
    posterior_of,
    summarize,
)
from mlrollouts.experiment.sequential import (
    always_valid_p_value,
    bernoulli_difference,
    confidence_sequence_half_width,
    gaussian_difference,
    holm_adjust,
)
from mlrollouts.experiment.weights import next_weights

# Weight changes smaller than this are not reported as changes (no event, no route update).
WEIGHT_TOLERANCE = 1e-6


class DecisionReason(StrEnum):
    WINNER_FOUND = "WinnerFound"
    NOT_ENOUGH_SAMPLES = "NotEnoughSamples"
    NO_CLEAR_WINNER = "NoClearWinner"
    MAX_DURATION_REACHED = "MaxDurationReached"
    ALL_VARIANTS_FAILED_GUARDRAILS = "AllVariantsFailedGuardrails"
    ONE_HEALTHY_VARIANT = "OneHealthyVariant"
    NO_DECISION_RULE = "NoDecisionRule"


@dataclass(frozen=True)
class Comparison:
    """Frequentist evidence: ``variant`` against ``other``.

    ``difference`` is ``mean(variant) - mean(other)`` with its always-valid confidence sequence
    ``[low, high]`` at level 1 - alpha, and ``p_value`` the Holm-adjusted always-valid p-value.
    """

    variant: str
    other: str
    difference: float
    low: float
    high: float
    p_value: float


@dataclass(frozen=True)
class Decision:
    """Whether the experiment is over, with which winner (if any), why, and the evidence."""

    concluded: bool
    reason: DecisionReason
    message: str
    winner: str | None = None
    probability_to_be_best: float | None = None
    expected_loss: float | None = None
    comparisons: tuple[Comparison, ...] = ()

    @property
    def evidence(self) -> dict[str, float]:
        """The numbers behind the decision, flat, for the status (``Winner.evidence``)."""
        numbers: dict[str, float] = {}
        if self.probability_to_be_best is not None:
            numbers["probabilityToBeBest"] = self.probability_to_be_best
        if self.expected_loss is not None:
            numbers["expectedLoss"] = self.expected_loss
        for c in self.comparisons:
            numbers[f"pValue.{c.other}"] = c.p_value
            numbers[f"difference.{c.other}"] = c.difference
            numbers[f"differenceLow.{c.other}"] = c.low
            numbers[f"differenceHigh.{c.other}"] = c.high
        return numbers


@dataclass(frozen=True)
class VariantStatus:
    """Status of one variant after an evaluation.

    ``samples`` is the sample size the statistics use (eligible requests for Bernoulli rewards,
    rewards for Gaussian ones); ``mean`` is the observed mean reward (None without data);
    ``[low, high]`` is the credible interval (Bayesian) or the always-valid confidence sequence
    (frequentist rule) of the mean. Failed variants have probability and weight 0.
    """

    name: str
    requests: float
    reward_count: float
    reward_sum: float
    samples: float
    mean: float | None
    low: float
    high: float
    interval_kind: str
    probability_to_be_best: float
    expected_loss: float | None
    weight: float
    guardrail_failed: bool


@dataclass(frozen=True)
class Evaluation:
    weights: Mapping[str, float]
    weights_changed: bool
    variants: tuple[VariantStatus, ...]
    decision: Decision


def _validate(observations: Sequence[VariantObservation], current_weights: Mapping[str, float]) -> None:
    if not observations:
        raise ValueError("variants: at least one variant is needed")
    names = [o.name for o in observations]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"variants: duplicate names {duplicates}")
    for name, weight in current_weights.items():
        if not math.isfinite(weight) or weight < 0:
            raise ValueError(f"currentWeights[{name!r}]: must be a finite number >= 0, got {weight!r}")


def _check_arguments(
    observations: Sequence[VariantObservation],
    current_weights: Mapping[str, float],
    seed: int | Sequence[int],
    intervals_elapsed: int,
) -> list[int]:
    """The seeds, once every argument is known to be usable."""
    _validate(observations, current_weights)
    if intervals_elapsed < 0:
        raise ValueError(f"intervalsElapsed: must be >= 0, got {intervals_elapsed}")
    seeds = [seed] if isinstance(seed, int) else list(seed)
    if not seeds or any(not isinstance(s, int | np.integer) or s < 0 for s in seeds):
        raise ValueError(f"seed: must be a non-negative integer or a non-empty list of them, got {seed!r}")
    return seeds


def _best_arm(
    posteriors: Sequence[Posterior], healthy_index: np.ndarray, settings: ExperimentSettings, seeds: list[int]
) -> tuple[FloatArray, FloatArray]:
    """Each variant's probability to be best and expected loss among the healthy ones (a failed
    variant has probability 0 and no loss)."""
    probability = np.zeros(len(posteriors))
    loss: FloatArray = np.full(len(posteriors), np.nan)
    if len(healthy_index) == 1:
        probability[healthy_index] = 1.0
        loss[healthy_index] = 0.0
    elif len(healthy_index) > 1:
        rng = np.random.default_rng(seeds)
        draws = np.column_stack([posteriors[i].draw(rng, settings.posterior_draws) for i in healthy_index])
        probability[healthy_index], loss[healthy_index] = best_arm_statistics(draws)
    return probability, loss


def _next_split(
    names: list[str],
    summaries: list[SampleSummary],
    probability: FloatArray,
    healthy: np.ndarray,
    current: FloatArray,
    settings: ExperimentSettings,
    intervals_elapsed: int,
) -> FloatArray:
    healthy_index = np.flatnonzero(healthy)
    if len(healthy_index) == 0:
        # Nothing healthy to send traffic to: keep the split as it is and let the caller degrade.
        total = current.sum()
        return current / total if total > 0 else np.full(len(names), 1.0 / len(names))
    target = np.zeros(len(names))
    target[healthy_index] = target_split(
        settings.policy,
        [names[i] for i in healthy_index],
        [summaries[i] for i in healthy_index],
        probability[healthy_index],
        settings.reward_model,
        intervals_elapsed,
    )
    floors = np.array([settings.floor_of(n) for n in names])
    return next_weights(target, current, healthy, floors, settings.max_step)


def _variant_statuses(
    observations: Sequence[VariantObservation],
    summaries: list[SampleSummary],
    posteriors: Sequence[Posterior],
    probability: FloatArray,
    loss: FloatArray,
    weights: FloatArray,
    settings: ExperimentSettings,
) -> tuple[VariantStatus, ...]:
    statuses = []
    for i, (obs, summary, posterior) in enumerate(zip(observations, summaries, posteriors, strict=True)):
        if isinstance(settings.decision, FrequentistRule):
            low, high = _confidence_sequence(summary, settings.reward_model, settings.decision)
            kind = "ConfidenceSequence"
        else:
            low, high = posterior.interval(settings.credible_level)
            kind = "CredibleInterval"
        statuses.append(
            VariantStatus(
                name=obs.name,
                requests=obs.requests,
                reward_count=obs.reward_count,
                reward_sum=obs.reward_sum,
                samples=summary.n,
                mean=summary.mean if summary.n > 0 else None,
                low=low,
                high=high,
                interval_kind=kind,
                probability_to_be_best=float(probability[i]),
                expected_loss=None if math.isnan(loss[i]) else float(loss[i]),
                weight=float(weights[i]),
                guardrail_failed=obs.guardrail_failed,
            )
        )
    return tuple(statuses)


def evaluate(
    observations: Sequence[VariantObservation],
    current_weights: Mapping[str, float],
    settings: ExperimentSettings,
    seed: int | Sequence[int],
    *,
    intervals_elapsed: int = 0,
    max_duration_reached: bool = False,
) -> Evaluation:
    """Compute the next split, the per-variant status and the decision.

    ``current_weights`` are the weights now applied, in any unit (they are normalised; names
    missing from it count as 0, unknown names are ignored). ``intervals_elapsed`` counts the
    intervals since the experiment started (for epsilon decay). ``max_duration_reached`` turns
    "no winner yet" into a final decision.
    """
    seeds = _check_arguments(observations, current_weights, seed, intervals_elapsed)
    names = [o.name for o in observations]
    summaries = [summarize(o, settings.reward_model) for o in observations]
    posteriors = [posterior_of(s, settings.reward_model, settings.effective_prior) for s in summaries]
    healthy = np.array([not o.guardrail_failed for o in observations], dtype=bool)
    healthy_index = np.flatnonzero(healthy)
    probability, loss = _best_arm(posteriors, healthy_index, settings, seeds)
    current = np.array([float(current_weights.get(n, 0.0)) for n in names])
    weights = _next_split(names, summaries, probability, healthy, current, settings, intervals_elapsed)
    current_total = current.sum()
    normalised_current = current / current_total if current_total > 0 else current
    changed = bool(np.abs(weights - normalised_current).max() > WEIGHT_TOLERANCE)
    decision = _decide(settings, names, summaries, healthy_index, probability, loss)
    if max_duration_reached and not decision.concluded:
        decision = Decision(
            concluded=True,
            reason=DecisionReason.MAX_DURATION_REACHED,
            message=f"maxDuration reached without a winner ({decision.message})",
        )
    return Evaluation(
        weights=dict(zip(names, (float(w) for w in weights), strict=True)),
        weights_changed=changed,
        variants=_variant_statuses(observations, summaries, posteriors, probability, loss, weights, settings),
        decision=decision,
    )


def _confidence_sequence(
    summary: SampleSummary, model: RewardModel, rule: FrequentistRule
) -> tuple[float, float]:
    """Always-valid confidence sequence of one variant's mean."""
    if summary.n == 0:
        return (0.0, 1.0) if model is RewardModel.BERNOULLI else (-math.inf, math.inf)
    if model is RewardModel.BERNOULLI:
        # A slightly shrunk rate keeps the variance positive when all rewards are 0 or all 1.
        rate = (summary.n * summary.mean + 0.5) / (summary.n + 1)
        unit_variance = rate * (1 - rate)
    else:
        if summary.n < 2:
            return -math.inf, math.inf
        unit_variance = summary.variance
    variance = unit_variance / summary.n
    half = float(confidence_sequence_half_width(variance, rule.effect_size**2 * unit_variance, rule.alpha))
    low, high = summary.mean - half, summary.mean + half
    if model is RewardModel.BERNOULLI:
        low, high = max(low, 0.0), min(high, 1.0)
    return low, high


def _decide(
    settings: ExperimentSettings,
    names: list[str],
    summaries: list[SampleSummary],
    healthy_index: np.ndarray,
    probability: FloatArray,
    loss: FloatArray,
) -> Decision:
    rule = settings.decision
    if len(healthy_index) == 0:
        return Decision(
            concluded=False,
            reason=DecisionReason.ALL_VARIANTS_FAILED_GUARDRAILS,
            message="every variant failed its guardrails",
        )
    if len(healthy_index) == 1:
        only = names[int(healthy_index[0])]
        return Decision(
            concluded=False,
            reason=DecisionReason.ONE_HEALTHY_VARIANT,
            message=f"only variant {only!r} is healthy: nothing left to compare",
        )
    if rule is None:
        return Decision(concluded=False, reason=DecisionReason.NO_DECISION_RULE, message="no decision rule")
    short = [names[i] for i in healthy_index if summaries[i].n < rule.min_samples_per_variant]
    if short:
        return Decision(
            concluded=False,
            reason=DecisionReason.NOT_ENOUGH_SAMPLES,
            message=f"variants {', '.join(short)} have fewer than {rule.min_samples_per_variant} samples",
        )
    if isinstance(rule, BayesianRule):
        return _decide_bayesian(rule, names, healthy_index, probability, loss)
    return _decide_frequentist(rule, settings.reward_model, names, summaries, healthy_index)


def _decide_bayesian(
    rule: BayesianRule,
    names: list[str],
    healthy_index: np.ndarray,
    probability: FloatArray,
    loss: FloatArray,
) -> Decision:
    best = int(healthy_index[np.argmax(probability[healthy_index])])
    p, expected_loss = float(probability[best]), float(loss[best])
    evidence = (
        f"variant {names[best]!r} is best with probability {p:.4f} (threshold "
        f"{rule.probability_to_be_best}) and expected loss {expected_loss:.3g} (threshold {rule.expected_loss})"
    )
    found = p >= rule.probability_to_be_best and expected_loss <= rule.expected_loss
    return Decision(
        concluded=found,
        reason=DecisionReason.WINNER_FOUND if found else DecisionReason.NO_CLEAR_WINNER,
        message=evidence,
        winner=names[best] if found else None,
        probability_to_be_best=p,
        expected_loss=expected_loss,
    )


def _decide_frequentist(
    rule: FrequentistRule,
    model: RewardModel,
    names: list[str],
    summaries: list[SampleSummary],
    healthy_index: np.ndarray,
) -> Decision:
    """Holm-corrected pairwise always-valid tests; a winner must beat every other healthy variant."""
    idx = [int(i) for i in healthy_index]
    pairs = [(a, b) for pos, a in enumerate(idx) for b in idx[pos + 1 :]]
    n = np.array([summaries[i].n for i in range(len(summaries))])
    mean = np.array([summaries[i].mean for i in range(len(summaries))])
    var = np.array([summaries[i].variance for i in range(len(summaries))])
    a_idx = np.array([a for a, _ in pairs])
    b_idx = np.array([b for _, b in pairs])
    if model is RewardModel.BERNOULLI:
        delta, variance, tau2 = bernoulli_difference(
            n[a_idx], mean[a_idx], n[b_idx], mean[b_idx], rule.effect_size
        )
    else:
        delta, variance, tau2 = gaussian_difference(
            n[a_idx], mean[a_idx], var[a_idx], n[b_idx], mean[b_idx], var[b_idx], rule.effect_size
        )
    adjusted = holm_adjust(always_valid_p_value(delta, variance, tau2))
    # Each interval gets the level of its Bonferroni share, so all hold together.
    half = confidence_sequence_half_width(variance, tau2, rule.alpha / len(pairs))

    best = max(idx, key=lambda i: (summaries[i].mean, -i))
    comparisons = []
    wins = True
    for k, (a, b) in enumerate(pairs):
        if best not in (a, b):
            continue
        sign = 1.0 if a == best else -1.0
        other = b if a == best else a
        difference = sign * float(delta[k])
        comparisons.append(
            Comparison(
                variant=names[best],
                other=names[other],
                difference=difference,
                low=difference - float(half[k]),
                high=difference + float(half[k]),
                p_value=float(adjusted[k]),
            )
        )
        wins = wins and difference > 0 and float(adjusted[k]) <= rule.alpha
    worst_p = max(c.p_value for c in comparisons)
    evidence = (
        f"variant {names[best]!r} has the highest mean; largest Holm-adjusted always-valid p-value "
        f"against the others {worst_p:.4g} (alpha {rule.alpha})"
    )
    return Decision(
        concluded=wins,
        reason=DecisionReason.WINNER_FOUND if wins else DecisionReason.NO_CLEAR_WINNER,
        message=evidence,
        winner=names[best] if wins else None,
        comparisons=tuple(comparisons),
    )
