"""Posteriors against closed forms and against brute-force numerical integration."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import integrate, stats

from mlrollouts.experiment import (
    BetaPrior,
    ExperimentSettings,
    NormalInverseGammaPrior,
    RewardModel,
    VariantObservation,
    evaluate,
)
from mlrollouts.experiment.posterior import (
    BetaPosterior,
    NormalInverseGammaPosterior,
    SampleSummary,
    best_arm_statistics,
    summarize,
)


def test_beta_posterior_counts_fractional_rewards_as_fractions():
    # 40 requests, rewards 0.5 on 10 of them and 1.0 on 3: 8 successes out of 40 trials.
    observation = VariantObservation("a", requests=40, reward_count=13, reward_sum=8.0)
    posterior = BetaPosterior.update(BetaPrior(2.0, 3.0), summarize(observation, RewardModel.BERNOULLI))
    assert (posterior.alpha, posterior.beta) == pytest.approx((2.0 + 8.0, 3.0 + 32.0))
    assert posterior.mean == pytest.approx(stats.beta(10.0, 35.0).mean())
    assert posterior.interval(0.9) == pytest.approx(tuple(stats.beta(10.0, 35.0).ppf([0.05, 0.95])))


def test_beta_posterior_draws_follow_the_closed_form():
    posterior = BetaPosterior(alpha=13.5, beta=87.25)
    draws = posterior.draw(np.random.default_rng(0), 20_000)
    assert stats.kstest(draws, stats.beta(13.5, 87.25).cdf).pvalue > 0.01


def test_unrewarded_requests_are_failures_and_inconsistent_sums_are_rejected():
    summary = summarize(VariantObservation("a", requests=100, reward_count=0), RewardModel.BERNOULLI)
    assert (summary.n, summary.mean) == (100, 0.0)
    with pytest.raises(ValueError, match=r"variants\['a'\]\.rewardSum.*\[0, 1\]"):
        summarize(
            VariantObservation("a", requests=100, reward_count=5, reward_sum=7.0), RewardModel.BERNOULLI
        )


def normal_inverse_gamma_marginal_by_integration(data, prior, points):
    """CDF of the posterior mean on ``points``, from likelihood x prior on a grid (no conjugacy)."""
    mu = np.linspace(-4.0, 8.0, 1201)
    var = np.exp(np.linspace(math.log(1e-2), math.log(1e2), 801))
    m, v = np.meshgrid(mu, var, indexing="ij")
    log_density = (
        stats.norm.logpdf(m, loc=prior.mu, scale=np.sqrt(v / prior.kappa))
        + stats.invgamma.logpdf(v, prior.alpha, scale=prior.beta)
        + sum(stats.norm.logpdf(x, loc=m, scale=np.sqrt(v)) for x in data)
    )
    density = np.exp(log_density - log_density.max())
    marginal = integrate.trapezoid(density, var, axis=1)
    cdf = integrate.cumulative_trapezoid(marginal, mu, initial=0.0)
    return np.interp(points, mu, cdf / cdf[-1])


def test_normal_inverse_gamma_posterior_matches_numerical_integration():
    data = np.array([1.3, 2.9, 0.4, 2.2, 1.8, 3.5, 1.1, 2.6])
    prior = NormalInverseGammaPrior(mu=1.0, kappa=0.5, alpha=2.0, beta=1.5)
    observation = VariantObservation(
        "a",
        requests=len(data),
        reward_count=len(data),
        reward_sum=float(data.sum()),
        reward_sum_squares=float((data**2).sum()),
    )
    posterior = NormalInverseGammaPosterior.update(prior, summarize(observation, RewardModel.GAUSSIAN))
    df, loc, scale = posterior.mean_distribution
    points = np.array([0.5, 1.2, 1.8, 2.1, 2.5, 3.2])
    expected = normal_inverse_gamma_marginal_by_integration(data, prior, points)
    assert stats.t.cdf(points, df, loc=loc, scale=scale) == pytest.approx(expected, abs=2e-3)
    low, high = posterior.interval(0.95)
    assert (low, high) == pytest.approx(tuple(stats.t.ppf([0.025, 0.975], df, loc=loc, scale=scale)))


def test_normal_inverse_gamma_batch_update_equals_one_at_a_time():
    data = [4.0, -1.5, 2.25, 7.0, 0.5]
    prior = NormalInverseGammaPrior(mu=0.5, kappa=2.0, alpha=1.5, beta=0.75)
    step = NormalInverseGammaPosterior(prior.mu, prior.kappa, prior.alpha, prior.beta)
    for x in data:
        as_prior = NormalInverseGammaPrior(step.mu, step.kappa, step.alpha, step.beta)
        step = NormalInverseGammaPosterior.update(
            as_prior, SampleSummary(n=1, mean=x, sum_squared_deviations=0)
        )
    batch = NormalInverseGammaPosterior.update(
        prior,
        SampleSummary(
            n=len(data), mean=float(np.mean(data)), sum_squared_deviations=float(np.var(data) * len(data))
        ),
    )
    assert (batch.mu, batch.kappa, batch.alpha, batch.beta) == pytest.approx(
        (step.mu, step.kappa, step.alpha, step.beta)
    )


def test_gaussian_posterior_draws_follow_the_student_t_marginal():
    posterior = NormalInverseGammaPosterior(mu=2.0, kappa=30.0, alpha=16.0, beta=20.0)
    df, loc, scale = posterior.mean_distribution
    draws = posterior.draw(np.random.default_rng(1), 20_000)
    assert stats.kstest(draws, stats.t(df, loc=loc, scale=scale).cdf).pvalue > 0.01


def exact_two_beta(a: BetaPosterior, b: BetaPosterior) -> tuple[float, float]:
    """P(b > a) and E[max(a, b) - b] by numerical integration."""
    fa, fb = stats.beta(a.alpha, a.beta), stats.beta(b.alpha, b.beta)
    p_b_best = integrate.quad(lambda x: fb.pdf(x) * fa.cdf(x), 0, 1, limit=200)[0]
    # (a - b)+ = integral over t in [0, 1] of 1[b <= t < a], so for independent a and b
    # E[(a - b)+] = integral of F_b(t) (1 - F_a(t)).
    loss_b = integrate.quad(lambda t: fa.sf(t) * fb.cdf(t), 0, 1, limit=200)[0]
    return p_b_best, loss_b


def test_probability_to_be_best_and_expected_loss_match_numerical_integration():
    a, b = BetaPosterior(31.0, 271.0), BetaPosterior(42.0, 260.0)
    rng = np.random.default_rng(7)
    draws = np.column_stack([a.draw(rng, 200_000), b.draw(rng, 200_000)])
    probability, loss = best_arm_statistics(draws)
    exact_p, exact_loss = exact_two_beta(a, b)
    assert probability[1] == pytest.approx(exact_p, abs=4 * math.sqrt(exact_p * (1 - exact_p) / 200_000))
    assert loss[1] == pytest.approx(exact_loss, rel=0.03)
    assert probability.sum() == pytest.approx(1.0)


def test_status_reports_credible_intervals_of_the_posterior():
    observations = [
        VariantObservation("a", requests=500, reward_count=60, reward_sum=55.0),
        VariantObservation("b", requests=450, reward_count=70, reward_sum=70.0),
    ]
    result = evaluate(observations, {"a": 0.5, "b": 0.5}, ExperimentSettings(credible_level=0.9), seed=3)
    for status, (alpha, beta) in zip(result.variants, [(56.0, 446.0), (71.0, 381.0)], strict=True):
        assert (status.low, status.high) == pytest.approx(tuple(stats.beta(alpha, beta).ppf([0.05, 0.95])))
        assert status.interval_kind == "CredibleInterval"
    assert result.variants[0].mean == pytest.approx(55 / 500)
