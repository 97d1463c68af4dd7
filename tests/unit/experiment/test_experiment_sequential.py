"""The always-valid sequential test keeps its error rate under continuous monitoring.

Thousands of simulated experiments are monitored after every interval of 500 requests, exactly as
the controller looks at a running experiment; a false positive is any look at which the test
rejects. The same harness shows that a classical z-test read at every look does not hold its level
(so the harness can detect a broken test) and that the sequential test does find real differences.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from mlrollouts.experiment import (
    ExperimentSettings,
    FixedPolicy,
    FrequentistRule,
    RewardModel,
    VariantObservation,
    evaluate,
)
from mlrollouts.experiment.sequential import (
    always_valid_p_value,
    bernoulli_difference,
    confidence_sequence_half_width,
    gaussian_difference,
    holm_adjust,
    log_mixture_likelihood_ratio,
)

ALPHA = 0.05
EXPERIMENTS = 4000
LOOKS = 40
BATCH = 500  # requests per interval, split evenly over the arms


def monte_carlo_bound(rate: float, runs: int) -> float:
    """Upper end of what a true rate of ``rate`` can produce by chance (3 standard errors)."""
    return rate + 3 * math.sqrt(rate * (1 - rate) / runs)


def bernoulli_paths(rng: np.random.Generator, rates: list[float], runs: int = EXPERIMENTS):
    """Cumulative trials and successes per look: arrays of shape (runs, looks, arms)."""
    per_arm = BATCH // len(rates)
    successes = rng.binomial(per_arm, rates, size=(runs, LOOKS, len(rates))).cumsum(axis=1)
    trials = np.broadcast_to(per_arm * np.arange(1, LOOKS + 1)[None, :, None], successes.shape)
    return trials.astype(float), successes.astype(float)


def pairwise_p_values(trials, successes, effect_size=0.1):
    arms = trials.shape[-1]
    pairs = [(a, b) for a in range(arms) for b in range(a + 1, arms)]
    columns = []
    for a, b in pairs:
        delta, variance, tau2 = bernoulli_difference(
            trials[..., a],
            successes[..., a] / trials[..., a],
            trials[..., b],
            successes[..., b] / trials[..., b],
            effect_size,
        )
        columns.append(always_valid_p_value(delta, variance, tau2))
    return np.stack(columns, axis=-1)


def test_two_arm_bernoulli_a_a_false_positive_rate_stays_below_alpha():
    trials, successes = bernoulli_paths(np.random.default_rng(1), [0.1, 0.1])
    p = pairwise_p_values(trials, successes)[..., 0]
    ever_rejected = (p <= ALPHA).any(axis=1).mean()
    assert ever_rejected <= monte_carlo_bound(ALPHA, EXPERIMENTS), ever_rejected


def test_three_arm_bernoulli_a_a_holm_corrected_stays_below_alpha():
    trials, successes = bernoulli_paths(np.random.default_rng(2), [0.12, 0.12, 0.12])
    adjusted = holm_adjust(pairwise_p_values(trials, successes))
    any_false_claim = (adjusted <= ALPHA).any(axis=(1, 2)).mean()
    assert any_false_claim <= monte_carlo_bound(ALPHA, EXPERIMENTS), any_false_claim


def test_gaussian_a_a_false_positive_rate_stays_below_alpha():
    rng = np.random.default_rng(3)
    per_arm, mu, sigma = BATCH // 2, 5.0, 3.0
    shape = (EXPERIMENTS, LOOKS, 2)
    # Exact per-interval sufficient statistics of normal samples: mean and within-batch squares.
    batch_mean = rng.normal(mu, sigma / math.sqrt(per_arm), size=shape)
    within = sigma**2 * rng.chisquare(per_arm - 1, size=shape)
    sums = (per_arm * batch_mean).cumsum(axis=1)
    squares = (within + per_arm * batch_mean**2).cumsum(axis=1)
    n = per_arm * np.arange(1, LOOKS + 1)[None, :, None] * np.ones(shape)
    mean = sums / n
    var = (squares - n * mean**2) / (n - 1)
    delta, variance, tau2 = gaussian_difference(
        n[..., 0], mean[..., 0], var[..., 0], n[..., 1], mean[..., 1], var[..., 1], 0.1
    )
    ever_rejected = (always_valid_p_value(delta, variance, tau2) <= ALPHA).any(axis=1).mean()
    assert ever_rejected <= monte_carlo_bound(ALPHA, EXPERIMENTS), ever_rejected


def test_a_a_false_positive_rate_stays_below_alpha_under_adaptive_allocation():
    """Bandit policies move traffic with the data; the test must stay valid when they do.

    Two equal arms; after every look the next interval's traffic follows a probability-matching
    split (normal approximation of Thompson sampling, floor 1 %), vectorised over all runs.
    """
    rng = np.random.default_rng(8)
    rate = 0.1
    trials = np.zeros((EXPERIMENTS, 2))
    successes = np.zeros((EXPERIMENTS, 2))
    share_a = np.full(EXPERIMENTS, 0.5)
    ever_rejected = np.zeros(EXPERIMENTS, dtype=bool)
    for _ in range(LOOKS):
        to_a = rng.binomial(BATCH, share_a)
        batch = np.column_stack([to_a, BATCH - to_a])
        successes += rng.binomial(batch, rate)
        trials += batch
        with np.errstate(divide="ignore", invalid="ignore"):
            mean = np.where(trials > 0, successes / trials, 0.0)
        delta, variance, tau2 = bernoulli_difference(trials[:, 0], mean[:, 0], trials[:, 1], mean[:, 1], 0.1)
        ready = (trials > 0).all(axis=1)
        ever_rejected |= ready & (always_valid_p_value(delta, variance, tau2) <= ALPHA)
        posterior_var = (successes + 1) * (trials - successes + 1) / ((trials + 2) ** 2 * (trials + 3))
        posterior_mean = (successes + 1) / (trials + 2)
        z = (posterior_mean[:, 0] - posterior_mean[:, 1]) / np.sqrt(posterior_var.sum(axis=1))
        share_a = 0.01 + 0.98 * stats.norm.cdf(z)
    assert ever_rejected.mean() <= monte_carlo_bound(ALPHA, EXPERIMENTS), ever_rejected.mean()


def test_the_harness_catches_peeking_with_a_classical_test():
    """A fixed-horizon z-test read at every look rejects far more often than alpha."""
    trials, successes = bernoulli_paths(np.random.default_rng(1), [0.1, 0.1])
    delta, variance, _ = bernoulli_difference(
        trials[..., 0],
        successes[..., 0] / trials[..., 0],
        trials[..., 1],
        successes[..., 1] / trials[..., 1],
        0.1,
    )
    z = np.abs(delta) / np.sqrt(variance)
    classical = 2 * stats.norm.sf(z)
    ever_rejected = (classical <= ALPHA).any(axis=1).mean()
    assert ever_rejected > 2 * ALPHA, ever_rejected


def test_real_difference_is_found_with_high_power():
    trials, successes = bernoulli_paths(np.random.default_rng(4), [0.10, 0.15], runs=1000)
    p = pairwise_p_values(trials, successes)[..., 0]
    found = (p <= ALPHA).any(axis=1).mean()
    assert found >= 0.9, found


def test_confidence_sequence_covers_the_true_difference_at_all_looks():
    rates = [0.10, 0.13]
    trials, successes = bernoulli_paths(np.random.default_rng(5), rates)
    delta, variance, tau2 = bernoulli_difference(
        trials[..., 0],
        successes[..., 0] / trials[..., 0],
        trials[..., 1],
        successes[..., 1] / trials[..., 1],
        0.1,
    )
    half = confidence_sequence_half_width(variance, tau2, ALPHA)
    true = rates[0] - rates[1]
    ever_missed = (np.abs(delta - true) > half).any(axis=1).mean()
    # The pooled variance is the null one; with a true difference it is still close to the truth.
    assert ever_missed <= monte_carlo_bound(ALPHA, EXPERIMENTS), ever_missed


def test_mixture_likelihood_ratio_matches_its_definition():
    """Lambda equals the N(0, tau2)-mixture of normal likelihood ratios, integrated numerically."""
    delta, variance, tau2 = 0.02, 1e-4, 4e-4
    grid = np.linspace(-0.2, 0.2, 400_001)
    ratio = stats.norm.pdf(delta, loc=grid, scale=math.sqrt(variance)) / stats.norm.pdf(
        delta, scale=math.sqrt(variance)
    )
    mixture = np.trapezoid(ratio * stats.norm.pdf(grid, scale=math.sqrt(tau2)), grid)
    assert math.exp(float(log_mixture_likelihood_ratio(delta, variance, tau2))) == pytest.approx(
        mixture, rel=1e-6
    )


def test_degenerate_variance():
    assert always_valid_p_value(0.0, 0.0, 0.0) == 1.0
    assert always_valid_p_value(1.0, 0.0, 0.0) == 0.0


def test_holm_adjustment_matches_the_step_down_definition():
    p = np.array([0.01, 0.04, 0.03, 0.2])
    # sorted 0.01, 0.03, 0.04, 0.2 -> x4, x3, x2, x1 with running maximum
    expected = np.array([0.04, 0.09, 0.09, 0.2])
    assert holm_adjust(p) == pytest.approx(expected)
    assert holm_adjust(np.stack([p, p[::-1]])) == pytest.approx(np.stack([expected, expected[::-1]]))


def test_evaluate_reports_the_same_p_values_as_the_vectorised_test():
    trials, successes = bernoulli_paths(np.random.default_rng(6), [0.10, 0.12, 0.15], runs=3)
    adjusted = holm_adjust(pairwise_p_values(trials, successes, effect_size=0.1))
    for run in range(3):
        look = LOOKS - 1
        observations = [
            VariantObservation(
                name=name,
                requests=int(trials[run, look, arm]),
                reward_count=int(successes[run, look, arm]),
                reward_sum=float(successes[run, look, arm]),
            )
            for arm, name in enumerate(["a", "b", "c"])
        ]
        settings = ExperimentSettings(
            policy=FixedPolicy(),
            reward_model=RewardModel.BERNOULLI,
            decision=FrequentistRule(effect_size=0.1),
        )
        result = evaluate(observations, {}, settings, seed=0)
        pair_index = {("a", "b"): 0, ("a", "c"): 1, ("b", "c"): 2}
        for comparison in result.decision.comparisons:
            key = tuple(sorted((comparison.variant, comparison.other)))
            assert comparison.p_value == pytest.approx(adjusted[run, look, pair_index[key]])
        best = max(observations, key=lambda o: o.reward_sum).name
        assert all(c.variant == best for c in result.decision.comparisons)
        assert result.decision.concluded == all(
            c.p_value <= ALPHA and c.difference > 0 for c in result.decision.comparisons
        )
