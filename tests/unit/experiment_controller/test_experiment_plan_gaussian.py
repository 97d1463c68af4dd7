"""The Experiment pass with Gaussian (unbounded, possibly negative) rewards, tick by tick with a
fixed clock: count, sum and sum of squares become the posterior, a clear winner concludes, and data
the Gaussian model cannot use is reported instead of used."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from mlrollouts.api.experiment import Experiment, ExperimentPhase, ExperimentStatus
from mlrollouts.experiment import RewardModel
from mlrollouts.experiment.plan import (
    ExperimentObservation,
    ExperimentPlan,
    RewardCounts,
    VariantTarget,
    plan,
    settings_from_spec,
)

T0 = datetime(2026, 3, 2, 9, 0, 0, tzinfo=UTC)
NAMES = ("a", "b", "c")


def experiment(**reward: Any) -> Experiment:
    return Experiment.model_validate(
        {
            "apiVersion": "mlrollouts.io/v1alpha1",
            "kind": "Experiment",
            "metadata": {"name": "exp", "namespace": "ml", "uid": "u-g", "generation": 1},
            "spec": {
                "variants": [{"name": n, "modelDeployment": f"md-{n}"} for n in NAMES],
                "policy": {"type": "ThompsonSampling", "floor": 5, "maxWeightChange": 20, "seed": 3},
                "interval": "10s",
                "reward": {"distribution": "Gaussian", **reward},
                "decision": {"minSamplesPerVariant": 100, "expectedLossThreshold": 0.01},
                "onConclusion": "RouteToWinner",
            },
        }
    )


def gaussian(n: float, mean: float, sd: float) -> RewardCounts:
    """Counts of ``n`` rewards with this sample mean and (population) standard deviation."""
    return RewardCounts(
        requests=n * 1.25, feedback=n, reward_sum=n * mean, reward_sum_squares=n * (sd * sd + mean * mean)
    )


def observe(rewards: Any = None) -> ExperimentObservation:
    targets = {n: VariantTarget(n, f"md-{n}", model=f"m-{n}", revision=f"r{n}") for n in NAMES}
    return ExperimentObservation(targets=targets, rewards=rewards, guardrails={})


def step(exp: Experiment, obs: ExperimentObservation, now: datetime) -> tuple[Experiment, ExperimentPlan]:
    decided = plan(exp, obs, now)
    stored = decided.status.model_dump(mode="json", by_alias=True, exclude_none=True)
    return exp.model_copy(update={"status": ExperimentStatus.model_validate(stored)}), decided


def started(**reward: Any) -> Experiment:
    exp, first = step(experiment(**reward), observe(), T0)
    assert first.status.phase is ExperimentPhase.RUNNING
    return exp


def entry(decided: ExperimentPlan, name: str) -> Any:
    return next(v for v in decided.status.variants if v.name == name)


def test_settings_use_the_gaussian_model():
    assert settings_from_spec(experiment().spec).reward_model is RewardModel.GAUSSIAN


def test_negative_rewards_move_the_split_then_a_clear_winner_concludes():
    exp = started()
    before = {v.name: v.weight for v in exp.status.variants}
    # tick 1: few rewards, "b" ahead with a negative mean elsewhere; still running
    early = {"a": gaussian(40, -1.0, 2.0), "b": gaussian(40, 1.5, 2.0), "c": gaussian(40, 0.0, 2.0)}
    exp, decided = step(exp, observe(early), T0 + timedelta(seconds=10))
    assert decided.status.phase is ExperimentPhase.RUNNING and decided.status.winner is None
    assert decided.weights["b"] > before["b"] and decided.weights["a"] < before["a"]
    a = entry(decided, "a")
    assert a.reward_count == 40 and a.reward_sum == pytest.approx(-40.0)
    assert a.mean == pytest.approx(-1.0)
    # Student-t interval around the mean, about +/- 2 * 2 / sqrt(40) wide
    assert a.interval is not None and -1.9 < a.interval.low < -1.3 and -0.7 < a.interval.high < -0.1
    # tick 2: enough rewards, "b" clearly best
    late = {"a": gaussian(400, -1.0, 2.0), "b": gaussian(400, 1.5, 2.0), "c": gaussian(400, 0.0, 2.0)}
    _, decided = step(exp, observe(late), T0 + timedelta(seconds=20))
    assert decided.status.phase is ExperimentPhase.CONCLUDED
    winner = decided.status.winner
    assert winner is not None and winner.variant == "b" and winner.reason == "WinnerFound"
    assert decided.weights == {"a": 0, "b": 100, "c": 0}


def test_the_spread_matters_not_only_the_mean():
    # Same means; a wide spread leaves the winner open, a narrow one settles it.
    means = {"a": 0.0, "b": 0.3, "c": -0.3}
    wide = {n: gaussian(300, m, 20.0) for n, m in means.items()}
    narrow = {n: gaussian(300, m, 0.5) for n, m in means.items()}
    _, decided_wide = step(started(), observe(wide), T0 + timedelta(seconds=10))
    _, decided_narrow = step(started(), observe(narrow), T0 + timedelta(seconds=10))
    assert decided_wide.status.phase is ExperimentPhase.RUNNING
    assert decided_narrow.status.phase is ExperimentPhase.CONCLUDED
    assert entry(decided_wide, "b").probability_to_be_best < entry(decided_narrow, "b").probability_to_be_best


def test_a_missing_sum_of_squares_is_reported_not_used():
    exp = started()
    # a router without mlrouter_reward_sum_squares: the sum of squares reads 0
    counts = {n: RewardCounts(100, 80, 40.0) for n in NAMES}
    _, decided = step(exp, observe(counts), T0 + timedelta(seconds=10))
    assert decided.status.phase is ExperimentPhase.DEGRADED
    message = decided.status.message or ""
    assert "sum of squared rewards" in message and "mlrouter_reward_sum_squares" in message
    assert decided.weights == {v.name: v.weight for v in exp.status.variants}


def test_a_hair_short_sum_of_squares_from_extrapolation_is_corrected():
    exp = started()
    # constant rewards: sum^2 / count == sum of squares; extrapolation left it 0.5 % short
    counts = {n: RewardCounts(100, 80, 80 * 2.0, 80 * 4.0 * 0.995) for n in NAMES}
    _, decided = step(exp, observe(counts), T0 + timedelta(seconds=10))
    assert decided.status.phase is ExperimentPhase.RUNNING
    assert entry(decided, "a").mean == pytest.approx(2.0)


def test_gaussian_with_a_custom_reward_query_is_refused_with_the_reason():
    exp = started(source="Query", query='sum(revenue{variant="{{ variant }}"})')
    counts = {n: gaussian(50, 1.0, 1.0) for n in NAMES}
    _, decided = step(exp, observe(counts), T0 + timedelta(seconds=10))
    assert decided.status.phase is ExperimentPhase.DEGRADED
    degraded = next(c for c in decided.status.conditions if c.type == "Degraded")
    assert degraded.reason == "RewardModelUnsupported"
    assert "reward.source Feedback" in (decided.status.message or "")
