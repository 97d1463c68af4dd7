"""Each policy's split on fixed data, and the floor / smoothing / guardrail rules on top of it."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import integrate, stats

from mlrollouts.experiment import (
    EpsilonGreedyPolicy,
    ExperimentSettings,
    FixedPolicy,
    NormalInverseGammaPrior,
    RewardModel,
    ThompsonSamplingPolicy,
    UCB1Policy,
    VariantObservation,
    evaluate,
    to_integer_weights,
)
from mlrollouts.experiment.posterior import NormalInverseGammaPosterior, summarize
from mlrollouts.experiment.weights import next_weights


def bernoulli(name: str, requests: int, successes: float, failed: bool = False) -> VariantObservation:
    return VariantObservation(
        name,
        requests=requests,
        reward_count=math.ceil(successes),
        reward_sum=successes,
        guardrail_failed=failed,
    )


def unconstrained(policy, **kwargs) -> ExperimentSettings:
    """No floor, no smoothing: the policy's own target is applied."""
    return ExperimentSettings(policy=policy, floor=0.0, max_step=1.0, decision=None, **kwargs)


def weights_of(observations, policy, current=None, seed=0, **kwargs):
    return evaluate(observations, current or {}, unconstrained(policy, **kwargs), seed=seed).weights


DATA = [bernoulli("a", 1000, 100), bernoulli("b", 1000, 200), bernoulli("c", 1000, 150)]


def test_fixed_uses_configured_weights_and_renormalises_around_a_failed_variant():
    assert weights_of(DATA, FixedPolicy()) == pytest.approx({"a": 1 / 3, "b": 1 / 3, "c": 1 / 3})
    configured = FixedPolicy(weights={"a": 2, "b": 1, "c": 1})
    assert weights_of(DATA, configured) == pytest.approx({"a": 0.5, "b": 0.25, "c": 0.25})
    data = [*DATA[:2], bernoulli("c", 1000, 150, failed=True)]
    assert weights_of(data, configured) == pytest.approx({"a": 2 / 3, "b": 1 / 3, "c": 0.0})


def test_epsilon_greedy_gives_the_best_mean_one_minus_epsilon():
    weights = weights_of(DATA, EpsilonGreedyPolicy(epsilon=0.1))
    assert weights == pytest.approx({"a": 0.1 / 3, "b": 0.9 + 0.1 / 3, "c": 0.1 / 3})


def test_epsilon_greedy_decay_shrinks_epsilon_every_interval():
    policy = EpsilonGreedyPolicy(epsilon=0.3, decay=0.5)
    settings = unconstrained(policy)
    weights = evaluate(DATA, {}, settings, seed=0, intervals_elapsed=1).weights
    assert weights == pytest.approx({"a": 0.05, "b": 0.9, "c": 0.05})
    weights = evaluate(DATA, {}, settings, seed=0, intervals_elapsed=3).weights
    assert weights == pytest.approx({"a": 0.0125, "b": 0.975, "c": 0.0125})


def test_epsilon_greedy_shares_between_ties_and_tries_untried_variants():
    tied = [bernoulli("a", 100, 20), bernoulli("b", 200, 40), bernoulli("c", 100, 10)]
    assert weights_of(tied, EpsilonGreedyPolicy(epsilon=0.3)) == pytest.approx(
        {"a": 0.45, "b": 0.45, "c": 0.1}
    )
    untried = [bernoulli("a", 100, 20), bernoulli("b", 0, 0)]
    assert weights_of(untried, EpsilonGreedyPolicy(epsilon=0.2)) == pytest.approx({"a": 0.1, "b": 0.9})


def test_ucb1_prefers_the_uncertain_variant_when_its_bonus_is_larger():
    data = [bernoulli("a", 50, 5), bernoulli("b", 2000, 600)]
    # a: 0.1 + sqrt(2 ln 2050 / 50) = 0.652; b: 0.3 + sqrt(2 ln 2050 / 2000) = 0.388
    assert weights_of(data, UCB1Policy()) == pytest.approx({"a": 1.0, "b": 0.0})
    assert weights_of(data, UCB1Policy(exploration=0.0)) == pytest.approx({"a": 0.0, "b": 1.0})
    untried = [*data, bernoulli("c", 0, 0)]
    assert weights_of(untried, UCB1Policy()) == pytest.approx({"a": 0.0, "b": 0.0, "c": 1.0})


def test_ucb1_scales_the_bonus_by_the_reward_deviation_for_gaussian_rewards():
    def gaussian(name, n, mean, sd):
        return VariantObservation(
            name, requests=n, reward_count=n, reward_sum=n * mean, reward_sum_squares=n * (sd**2 + mean**2)
        )

    # Rewards in dollars with sd 10: a's bonus 10 * sqrt(2 ln 1100 / 100) = 3.74 beats b's lead of 2.
    data = [gaussian("a", 100, 50.0, 10.0), gaussian("b", 1000, 52.0, 10.0)]
    weights = weights_of(data, UCB1Policy(), reward_model=RewardModel.GAUSSIAN)
    assert weights == pytest.approx({"a": 1.0, "b": 0.0})


def test_thompson_weights_are_the_probability_to_be_best():
    data = [bernoulli("a", 600, 60), bernoulli("b", 500, 64)]
    fa, fb = stats.beta(61, 541), stats.beta(65, 437)
    exact_b = integrate.quad(lambda x: fb.pdf(x) * fa.cdf(x), 0, 1, limit=200)[0]
    weights = weights_of(data, ThompsonSamplingPolicy(), posterior_draws=50_000)
    tolerance = 4.5 * math.sqrt(exact_b * (1 - exact_b) / 50_000)
    assert weights["b"] == pytest.approx(exact_b, abs=tolerance)
    assert weights["a"] + weights["b"] == pytest.approx(1.0)


def test_gaussian_thompson_weights_are_the_probability_to_be_best():
    def gaussian(name, rewards):
        rewards = np.asarray(rewards)
        return VariantObservation(
            name,
            requests=len(rewards),
            reward_count=len(rewards),
            reward_sum=float(rewards.sum()),
            reward_sum_squares=float((rewards**2).sum()),
        )

    rng = np.random.default_rng(11)
    data = [gaussian("a", rng.normal(3.0, 2.0, 40)), gaussian("b", rng.normal(3.5, 2.0, 30))]
    prior = NormalInverseGammaPrior()
    a, b = (NormalInverseGammaPosterior.update(prior, summarize(o, RewardModel.GAUSSIAN)) for o in data)
    ta, tb = (stats.t(d.mean_distribution[0], d.mean_distribution[1], d.mean_distribution[2]) for d in (a, b))
    exact_b = integrate.quad(lambda x: tb.pdf(x) * ta.cdf(x), -np.inf, np.inf)[0]
    weights = weights_of(
        data, ThompsonSamplingPolicy(), reward_model=RewardModel.GAUSSIAN, posterior_draws=50_000
    )
    assert weights["b"] == pytest.approx(exact_b, abs=4.5 * math.sqrt(exact_b * (1 - exact_b) / 50_000))


def test_floor_keeps_a_clear_loser_exploring():
    data = [bernoulli("a", 5000, 250), bernoulli("b", 5000, 750)]
    plain = weights_of(data, ThompsonSamplingPolicy())
    assert plain["a"] < 1e-3
    floored = evaluate(data, {}, ExperimentSettings(floor=0.05, decision=None), seed=0).weights
    assert floored["a"] == pytest.approx(0.05, abs=1e-3)
    assert floored["a"] >= 0.05 - 1e-12


def test_smoothing_limits_each_change_and_converges_step_by_step():
    data = [bernoulli("a", 5000, 250), bernoulli("b", 5000, 750), bernoulli("c", 5000, 500)]
    config = ExperimentSettings(policy=EpsilonGreedyPolicy(epsilon=0.0), max_step=0.1, decision=None)
    weights = {"a": 1 / 3, "b": 1 / 3, "c": 1 / 3}
    history = [weights]
    for step in range(12):
        weights = evaluate(data, weights, config, seed=step).weights
        history.append(weights)
    for before, after in itertools.pairwise(history):
        assert max(abs(after[k] - before[k]) for k in after) <= 0.1 + 1e-12
        assert sum(after.values()) == pytest.approx(1.0)
    # b's share grows by exactly max_step until it reaches the target, then stays.
    assert [round(h["b"], 6) for h in history[:4]] == pytest.approx(
        [1 / 3, 1 / 3 + 0.1, 1 / 3 + 0.2, 1 / 3 + 0.3]
    )
    assert history[-1] == pytest.approx({"a": 0.0, "b": 1.0, "c": 0.0})


def test_guardrail_failure_takes_effect_at_once_and_the_rest_is_smoothed():
    data = [bernoulli("a", 1000, 100), bernoulli("b", 1000, 100), bernoulli("c", 1000, 100, failed=True)]
    config = ExperimentSettings(policy=FixedPolicy(), max_step=0.01, decision=None)
    weights = evaluate(data, {"a": 0.5, "b": 0.3, "c": 0.2}, config, seed=0).weights
    # Renormalised a: 0.625, b: 0.375, then one 0.01 step towards the equal split.
    assert weights == pytest.approx({"a": 0.615, "b": 0.385, "c": 0.0})


def test_per_variant_floors_override_the_common_floor():
    data = [bernoulli("a", 5000, 250), bernoulli("b", 5000, 750), bernoulli("c", 5000, 500)]
    settings = ExperimentSettings(
        policy=EpsilonGreedyPolicy(epsilon=0.0), floor=0.05, variant_floors={"a": 0.2}, decision=None
    )
    weights = evaluate(data, {}, settings, seed=0).weights
    assert weights == pytest.approx({"a": 0.2, "b": 0.75, "c": 0.05})


def test_a_raised_floor_applies_at_once():
    data = [bernoulli("a", 1000, 100), bernoulli("b", 1000, 300)]
    config = ExperimentSettings(
        policy=EpsilonGreedyPolicy(epsilon=0.0), floor=0.05, max_step=0.01, decision=None
    )
    weights = evaluate(data, {"a": 0.0, "b": 1.0}, config, seed=0).weights
    assert weights == pytest.approx({"a": 0.05, "b": 0.95})


@settings(max_examples=150, deadline=None)
@given(
    st.integers(1, 6).flatmap(
        lambda k: st.tuples(
            *(st.lists(st.floats(0, 1), min_size=k, max_size=k) for _ in range(2)),
            st.lists(st.booleans(), min_size=k, max_size=k),
            st.lists(st.floats(0, 0.5), min_size=k, max_size=k),
        )
    ),
    st.floats(0.001, 1),
)
def test_weight_invariants(case, max_step):
    target, current, healthy, floors = (np.array(x, dtype=float) for x in case)
    healthy = healthy.astype(bool)
    result = next_weights(target, current, healthy, floors, max_step)
    if not healthy.any():
        assert (result == 0).all()
        return
    assert result.sum() == pytest.approx(1.0)
    assert (result[~healthy] == 0).all()
    healthy_floors = np.where(healthy, floors, 0.0)
    if healthy_floors.sum() > 1:
        healthy_floors = healthy_floors / healthy_floors.sum()
    assert (result >= healthy_floors - 1e-9).all()
    start = np.where(healthy, current, 0.0)
    if start.sum() > 0:
        start = start / start.sum()
        if (start >= healthy_floors).all():
            # Nothing had to be lifted or removed: only the smoothed policy move remains.
            assert np.abs(result - start).max() <= max_step + 1e-9


def test_integer_weights_sum_to_the_total_and_keep_zeros():
    assert to_integer_weights(np.array([1 / 3, 1 / 3, 1 / 3])).tolist() == [34, 33, 33]
    assert to_integer_weights(np.array([0.0, 0.996, 0.004])).tolist() == [0, 100, 0]
    assert to_integer_weights(np.array([0.0, 0.7, 0.3]), total=1000).tolist() == [0, 700, 300]
    # 0.29 * 100 is 28.999... in floating point: a 29 % floor must stay 29.
    assert to_integer_weights(np.array([0.29, 0.355, 0.355])).tolist() == [29, 36, 35]
    assert to_integer_weights(np.array([0.0, 0.0, 1e-12])).tolist() == [0, 0, 100]
    with pytest.raises(ValueError, match="total"):
        to_integer_weights(np.array([1.0]), total=0)
