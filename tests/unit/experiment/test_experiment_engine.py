"""evaluate(): determinism, decisions, edge cases and input validation."""

from __future__ import annotations

import math

import pytest

from mlrollouts.experiment import (
    BayesianRule,
    BetaPrior,
    DecisionReason,
    EpsilonGreedyPolicy,
    ExperimentSettings,
    FixedPolicy,
    FrequentistRule,
    NormalInverseGammaPrior,
    RewardModel,
    ThompsonSamplingPolicy,
    VariantObservation,
    evaluate,
)

EQUAL3 = {"a": 1 / 3, "b": 1 / 3, "c": 1 / 3}


def bernoulli(name: str, requests: int, successes: float, failed: bool = False) -> VariantObservation:
    return VariantObservation(
        name,
        requests=requests,
        reward_count=math.ceil(successes),
        reward_sum=successes,
        guardrail_failed=failed,
    )


CLEAR = [bernoulli("a", 4000, 400), bernoulli("b", 4000, 480), bernoulli("c", 4000, 600)]


def test_same_inputs_give_the_same_result():
    settings = ExperimentSettings(floor=0.02, max_step=0.2)
    data = [bernoulli("a", 300, 30), bernoulli("b", 320, 36), bernoulli("c", 310, 40)]
    first = evaluate(data, EQUAL3, settings, seed=42)
    assert evaluate(data, EQUAL3, settings, seed=42) == first
    assert evaluate(data, EQUAL3, settings, seed=[7, 3]) == evaluate(data, EQUAL3, settings, seed=[7, 3])
    other = evaluate(data, EQUAL3, settings, seed=43)
    assert other.weights != first.weights
    assert other.weights == pytest.approx(first.weights, abs=0.02)


def test_no_data_gives_an_even_split_prior_intervals_and_no_decision():
    data = [bernoulli("a", 0, 0), bernoulli("b", 0, 0), bernoulli("c", 0, 0)]
    result = evaluate(data, {}, ExperimentSettings(), seed=1)
    assert result.weights == pytest.approx(EQUAL3, abs=0.02)
    assert result.decision.reason is DecisionReason.NOT_ENOUGH_SAMPLES
    assert not result.decision.concluded
    for status in result.variants:
        assert status.mean is None
        assert (status.low, status.high) == pytest.approx((0.025, 0.975))


def test_fractional_counts_from_extrapolated_increases_are_accepted():
    data = [
        VariantObservation("a", requests=1000.4, reward_count=99.7, reward_sum=99.7),
        VariantObservation("b", requests=999.6, reward_count=150.2, reward_sum=150.2),
    ]
    result = evaluate(data, {}, ExperimentSettings(), seed=1)
    assert result.variants[0].samples == pytest.approx(1000.4)
    assert result.variants[1].mean == pytest.approx(150.2 / 999.6)


def test_a_single_variant_gets_everything_and_no_contest():
    result = evaluate([bernoulli("only", 100, 10)], {"only": 1.0}, ExperimentSettings(), seed=1)
    assert result.weights == {"only": 1.0}
    assert not result.weights_changed
    assert result.decision.reason is DecisionReason.ONE_HEALTHY_VARIANT
    assert result.variants[0].probability_to_be_best == 1.0


def test_all_variants_failed_keeps_the_split_and_says_so():
    data = [bernoulli("a", 100, 10, failed=True), bernoulli("b", 100, 20, failed=True)]
    result = evaluate(data, {"a": 0.3, "b": 0.7}, ExperimentSettings(), seed=1)
    assert result.weights == pytest.approx({"a": 0.3, "b": 0.7})
    assert result.decision.reason is DecisionReason.ALL_VARIANTS_FAILED_GUARDRAILS
    assert not result.decision.concluded
    assert all(v.probability_to_be_best == 0 for v in result.variants)


def test_zero_rewards_everywhere_is_no_winner():
    data = [bernoulli("a", 2000, 0), bernoulli("b", 2000, 0)]
    for decision in (BayesianRule(), FrequentistRule()):
        result = evaluate(data, {"a": 0.5, "b": 0.5}, ExperimentSettings(decision=decision), seed=1)
        assert result.decision.winner is None
        assert sum(result.weights.values()) == pytest.approx(1.0)
        assert all(v.mean == 0.0 and 0.0 <= v.low <= v.high <= 1.0 for v in result.variants)
    gaussian = [
        VariantObservation("a", requests=50, reward_count=50),
        VariantObservation("b", requests=50, reward_count=50),
    ]
    for decision in (BayesianRule(min_samples_per_variant=10), FrequentistRule(min_samples_per_variant=10)):
        settings = ExperimentSettings(reward_model=RewardModel.GAUSSIAN, decision=decision)
        result = evaluate(gaussian, {}, settings, seed=1)
        assert result.decision.winner is None
        assert all(math.isfinite(w) for w in result.weights.values())


def test_bayesian_rule_declares_the_clear_winner_with_its_evidence():
    result = evaluate(CLEAR, EQUAL3, ExperimentSettings(decision=BayesianRule()), seed=5)
    decision = result.decision
    assert decision.concluded and decision.winner == "c"
    assert decision.reason is DecisionReason.WINNER_FOUND
    assert decision.probability_to_be_best >= 0.95 and decision.expected_loss <= 0.001
    assert "'c'" in decision.message and "probability" in decision.message
    assert decision.evidence == {
        "probabilityToBeBest": decision.probability_to_be_best,
        "expectedLoss": decision.expected_loss,
    }


def test_bayesian_rule_needs_both_thresholds():
    strict_loss = BayesianRule(expected_loss=1e-9)
    result = evaluate(CLEAR, EQUAL3, ExperimentSettings(decision=strict_loss), seed=5)
    assert not result.decision.concluded
    assert result.decision.reason is DecisionReason.NO_CLEAR_WINNER
    close = [bernoulli("a", 4000, 400), bernoulli("b", 4000, 410)]
    result = evaluate(close, {}, ExperimentSettings(decision=BayesianRule(expected_loss=1.0)), seed=5)
    assert not result.decision.concluded


def test_minimum_samples_per_variant_holds_back_a_decision():
    rule = BayesianRule(min_samples_per_variant=5000)
    result = evaluate(CLEAR, EQUAL3, ExperimentSettings(decision=rule), seed=5)
    assert result.decision.reason is DecisionReason.NOT_ENOUGH_SAMPLES
    assert "5000" in result.decision.message


def test_frequentist_rule_declares_a_winner_that_beats_every_other_variant():
    result = evaluate(CLEAR, EQUAL3, ExperimentSettings(decision=FrequentistRule()), seed=5)
    decision = result.decision
    assert decision.concluded and decision.winner == "c"
    assert {c.other for c in decision.comparisons} == {"a", "b"}
    for comparison in decision.comparisons:
        assert comparison.p_value <= 0.05
        assert 0 < comparison.low < comparison.difference < comparison.high
    assert all(v.interval_kind == "ConfidenceSequence" for v in result.variants)
    assert decision.evidence["pValue.a"] == decision.comparisons[0].p_value
    assert set(decision.evidence) == {
        f"{kind}.{other}"
        for kind in ("pValue", "difference", "differenceLow", "differenceHigh")
        for other in "ab"
    }


def test_frequentist_rule_does_not_conclude_when_one_rival_is_not_beaten():
    data = [bernoulli("a", 4000, 400), bernoulli("b", 4000, 590), bernoulli("c", 4000, 600)]
    decision = evaluate(data, EQUAL3, ExperimentSettings(decision=FrequentistRule()), seed=5).decision
    assert not decision.concluded and decision.winner is None
    by_other = {c.other: c for c in decision.comparisons}
    assert by_other["a"].p_value <= 0.05 < by_other["b"].p_value


def test_a_variant_that_failed_its_guardrails_cannot_win_or_get_traffic():
    data = [bernoulli("a", 4000, 400), bernoulli("b", 4000, 480), bernoulli("c", 4000, 600, failed=True)]
    result = evaluate(data, EQUAL3, ExperimentSettings(max_step=0.05), seed=5)
    assert result.weights["c"] == 0.0
    assert result.decision.winner == "b"
    status = {v.name: v for v in result.variants}
    assert status["c"].guardrail_failed and status["c"].probability_to_be_best == 0.0


def test_max_duration_ends_the_experiment_without_a_winner():
    data = [bernoulli("a", 1000, 100), bernoulli("b", 1000, 101)]
    result = evaluate(data, {}, ExperimentSettings(), seed=1, max_duration_reached=True)
    assert result.decision.concluded and result.decision.winner is None
    assert result.decision.reason is DecisionReason.MAX_DURATION_REACHED
    won = evaluate(CLEAR, EQUAL3, ExperimentSettings(), seed=1, max_duration_reached=True)
    assert won.decision.reason is DecisionReason.WINNER_FOUND


def test_weights_changed_flags_only_real_changes():
    data = [bernoulli("a", 100, 10), bernoulli("b", 100, 30)]
    settings = ExperimentSettings(policy=FixedPolicy(), decision=None)
    assert not evaluate(data, {"a": 0.5, "b": 0.5}, settings, seed=0).weights_changed
    assert not evaluate(data, {"a": 50, "b": 50}, settings, seed=0).weights_changed
    moved = ExperimentSettings(policy=EpsilonGreedyPolicy(), decision=None)
    assert evaluate(data, {"a": 0.5, "b": 0.5}, moved, seed=0).weights_changed


@pytest.mark.parametrize(
    ("build", "field"),
    [
        (lambda: VariantObservation("a", requests=-1), r"variants\['a'\]\.requests"),
        (lambda: VariantObservation("a", reward_count=1, reward_sum=math.nan), r"variants\['a'\]\.rewardSum"),
        (lambda: VariantObservation("a", reward_sum=2.0), r"variants\['a'\]\.rewardSum"),
        (lambda: VariantObservation(""), r"variants\[\]\.name"),
        (lambda: EpsilonGreedyPolicy(epsilon=1.5), r"policy\.epsilon"),
        (lambda: FixedPolicy(weights={"a": -1}), r"policy\.weights\['a'\]"),
        (lambda: BayesianRule(probability_to_be_best=1.5), r"decision\.probabilityToBeBest"),
        (lambda: FrequentistRule(alpha=0), r"decision\.alpha"),
        (lambda: ExperimentSettings(floor=1.0), r"floor"),
        (lambda: ExperimentSettings(variant_floors={"b": -0.1}), r"variants\['b'\]\.floor"),
        (lambda: EpsilonGreedyPolicy(decay=0.0), r"policy\.epsilonDecay"),
        (
            lambda: evaluate([bernoulli("a", 1, 0)], {}, ExperimentSettings(), seed=0, intervals_elapsed=-1),
            r"intervalsElapsed",
        ),
        (lambda: ExperimentSettings(max_step=0), r"maxStep"),
        (lambda: ExperimentSettings(prior=NormalInverseGammaPrior()), r"prior: a Bernoulli reward model"),
        (lambda: BetaPrior(alpha=0), r"prior\.alpha"),
        (
            lambda: evaluate([bernoulli("a", 1, 0), bernoulli("a", 1, 0)], {}, ExperimentSettings(), seed=0),
            r"variants: duplicate names \['a'\]",
        ),
        (
            lambda: evaluate([bernoulli("a", 1, 0)], {"a": -0.5}, ExperimentSettings(), seed=0),
            r"currentWeights\['a'\]",
        ),
        (lambda: evaluate([], {}, ExperimentSettings(), seed=0), r"variants: at least one"),
        (lambda: evaluate([bernoulli("a", 1, 0)], {}, ExperimentSettings(), seed=-1), r"seed"),
        (lambda: VariantObservation("a", requests=math.inf), r"variants\['a'\]\.requests"),
        (
            lambda: evaluate(
                [
                    VariantObservation(
                        "g", requests=2, reward_count=2, reward_sum=10.0, reward_sum_squares=1.0
                    )
                ],
                {},
                ExperimentSettings(reward_model=RewardModel.GAUSSIAN),
                seed=0,
            ),
            r"variants\['g'\]\.rewardSumSquares",
        ),
    ],
)
def test_bad_input_is_rejected_naming_the_field(build, field):
    with pytest.raises(ValueError, match=field):
        build()


def test_thompson_with_floor_and_smoothing_moves_towards_the_best_variant():
    settings = ExperimentSettings(policy=ThompsonSamplingPolicy(), floor=0.05, max_step=0.2, decision=None)
    weights = EQUAL3
    for step in range(5):
        weights = evaluate(CLEAR, weights, settings, seed=step).weights
    assert weights["c"] == pytest.approx(0.9, abs=0.01)
    assert weights["a"] == pytest.approx(0.05) and weights["b"] == pytest.approx(0.05, abs=0.01)
