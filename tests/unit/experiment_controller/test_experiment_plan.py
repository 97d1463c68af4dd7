"""The Experiment controller's pure pass, tick by tick with a fixed clock: spec -> settings, the
first route, evaluations, guardrails, conclusion, abort, bad data, and resuming from a status that
went through JSON (as after an operator restart)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from mlrollouts.api.experiment import Experiment, ExperimentPhase, ExperimentStatus, GuardrailState
from mlrollouts.experiment import (
    BayesianRule,
    EpsilonGreedyPolicy,
    FixedPolicy,
    FrequentistRule,
    RewardModel,
    ThompsonSamplingPolicy,
    UCB1Policy,
)
from mlrollouts.experiment.plan import (
    ExperimentObservation,
    ExperimentPlan,
    GuardrailOutcome,
    RewardCounts,
    VariantTarget,
    evaluation_due,
    plan,
    seed_base,
    settings_from_spec,
)

T0 = datetime(2026, 1, 5, 12, 0, 0, tzinfo=UTC)
NAMES = ("a", "b", "c")


def manifest(**spec: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "variants": [{"name": n, "modelDeployment": f"md-{n}"} for n in NAMES],
        "policy": {"type": "ThompsonSampling", "floor": 5, "maxWeightChange": 20, "seed": 7},
        "interval": "10s",
        "decision": {"method": "Bayesian", "minSamplesPerVariant": 200, "expectedLossThreshold": 0.005},
        "onConclusion": "RouteToWinner",
    }
    base.update(spec)
    return {
        "apiVersion": "mlrollouts.io/v1alpha1",
        "kind": "Experiment",
        "metadata": {"name": "exp", "namespace": "ml", "uid": "u-1", "generation": 1},
        "spec": base,
    }


def experiment(status: ExperimentStatus | None = None, **spec: Any) -> Experiment:
    exp = Experiment.model_validate(manifest(**spec))
    exp.status = status
    return exp


def targets(*missing: str) -> dict[str, VariantTarget]:
    out = {}
    for n in NAMES:
        if n in missing:
            out[n] = VariantTarget(n, f"md-{n}", problem=f"ModelDeployment 'md-{n}' not found")
        else:
            out[n] = VariantTarget(n, f"md-{n}", model=f"model-{n}", revision=f"r{n}")
    return out


def rewards(rates: dict[str, float], requests: float) -> dict[str, RewardCounts]:
    return {
        n: RewardCounts(requests, requests * max(0.8, rate), requests * rate) for n, rate in rates.items()
    }


def observe(rewards_: Any = None, guardrails: Any = None, action: str | None = None) -> ExperimentObservation:
    return ExperimentObservation(
        targets=targets(), rewards=rewards_, guardrails=guardrails or {}, action=action
    )


def step(exp: Experiment, obs: ExperimentObservation, now: datetime) -> tuple[Experiment, ExperimentPlan]:
    """One pass, with the status written back through JSON like the API server would keep it."""
    decided = plan(exp, obs, now)
    stored = decided.status.model_dump(mode="json", by_alias=True, exclude_none=True)
    return exp.model_copy(update={"status": ExperimentStatus.model_validate(stored)}), decided


def started() -> Experiment:
    exp, first = step(experiment(), observe(), T0)
    assert first.status.phase is ExperimentPhase.RUNNING
    return exp


def weights_of(exp: Experiment) -> dict[str, int]:
    assert exp.status is not None
    return {v.name: v.weight for v in exp.status.variants}


def reasons(decided: ExperimentPlan) -> list[str]:
    return [e.reason for e in decided.events]


# --- spec -> settings ---------------------------------------------------------------------------


def test_settings_thompson_floors_step_and_bayesian_rule():
    spec = experiment(
        variants=[
            {"name": "a", "modelDeployment": "x", "floor": 10},
            {"name": "b", "modelDeployment": "y"},
        ]
    ).spec
    settings = settings_from_spec(spec)
    assert isinstance(settings.policy, ThompsonSamplingPolicy)
    assert settings.floor == pytest.approx(0.05)
    assert settings.variant_floors == {"a": pytest.approx(0.10)}
    assert settings.max_step == pytest.approx(0.20)
    assert settings.reward_model is RewardModel.BERNOULLI
    assert settings.decision == BayesianRule(
        probability_to_be_best=0.95, expected_loss=0.005, min_samples_per_variant=200
    )


def test_settings_fixed_split_is_exact_and_immediate():
    spec = experiment(
        variants=[
            {"name": "a", "modelDeployment": "x", "weight": 90},
            {"name": "b", "modelDeployment": "y", "weight": 10},
        ],
        policy={"type": "Fixed", "floor": 5, "maxWeightChange": 10},
    ).spec
    settings = settings_from_spec(spec)
    assert settings.policy == FixedPolicy(weights={"a": 90.0, "b": 10.0})
    assert (settings.floor, settings.variant_floors, settings.max_step) == (0.0, {}, 1.0)


def test_settings_epsilon_greedy_ucb1_and_frequentist():
    eps = settings_from_spec(
        experiment(policy={"type": "EpsilonGreedy", "epsilon": 0.2, "epsilonDecay": 0.9}).spec
    )
    assert eps.policy == EpsilonGreedyPolicy(epsilon=0.2, decay=0.9)
    ucb = settings_from_spec(
        experiment(policy={"type": "UCB1"}, decision={"method": "Frequentist", "alpha": 0.01}).spec
    )
    assert isinstance(ucb.policy, UCB1Policy)
    assert isinstance(ucb.decision, FrequentistRule) and ucb.decision.alpha == 0.01


def test_seed_from_policy_or_uid():
    assert seed_base(experiment()) == 7
    no_seed = experiment(policy={"type": "ThompsonSampling"})
    assert seed_base(no_seed) == seed_base(experiment(policy={"type": "ThompsonSampling"}))
    other = Experiment.model_validate(
        {**manifest(policy={"type": "ThompsonSampling"}), "metadata": {"name": "exp", "uid": "u-2"}}
    )
    assert seed_base(other) != seed_base(no_seed)


# --- first passes -------------------------------------------------------------------------------


def test_pending_until_every_model_deployment_serves():
    decided = plan(experiment(), ExperimentObservation(targets=targets("b")), T0)
    assert decided.weights is None
    assert decided.status.phase is ExperimentPhase.PENDING
    assert "md-b" in (decided.status.message or "")
    ready = next(c for c in decided.status.conditions if c.type == "Ready")
    assert (ready.status.value, ready.reason) == ("False", "VariantNotReady")


def test_first_pass_starts_with_an_even_split_above_the_floor():
    decided = plan(experiment(), observe(), T0)
    assert decided.status.phase is ExperimentPhase.RUNNING
    assert decided.status.started_at == T0 and decided.status.last_update_at == T0
    assert sum(decided.weights.values()) == 100
    assert all(30 <= w <= 36 for w in decided.weights.values())
    assert reasons(decided) == ["Started", "WeightChanged"]
    assert [v.weight for v in decided.status.variants] == list(decided.weights.values())


def test_evaluation_is_due_once_per_interval():
    exp = started()
    assert not evaluation_due(exp, T0 + timedelta(seconds=9.9))
    assert evaluation_due(exp, T0 + timedelta(seconds=10))
    # before it is due, a pass keeps the route and reads nothing
    decided = plan(exp, observe(), T0 + timedelta(seconds=5))
    assert decided.weights == weights_of(exp) and decided.events == ()


# --- evaluations --------------------------------------------------------------------------------


def test_weights_move_towards_the_best_variant_by_at_most_max_change():
    exp = started()
    before = weights_of(exp)
    now = T0 + timedelta(seconds=10)
    exp2, decided = step(exp, observe(rewards({"a": 0.1, "b": 0.2, "c": 0.5}, 100)), now)
    after = decided.weights
    assert after["c"] > before["c"] and after["a"] < before["a"]
    assert max(abs(after[n] - before[n]) for n in NAMES) <= 20 + 1  # rounding to whole percent
    assert min(after.values()) >= 5
    assert "WeightChanged" in reasons(decided)
    c = next(v for v in decided.status.variants if v.name == "c")
    assert c.requests == 100 and c.reward_count == 80 and c.reward_sum == pytest.approx(50)
    assert c.mean == pytest.approx(0.5)
    assert c.interval is not None and c.interval.low < 0.5 < c.interval.high
    assert c.probability_to_be_best > 0.9 and c.guardrail is GuardrailState.OK
    assert decided.status.last_update_at == now and decided.status.phase is ExperimentPhase.RUNNING
    assert not evaluation_due(exp2, now + timedelta(seconds=5))


def test_same_data_same_weights():
    exp = started()
    obs = observe(rewards({"a": 0.3, "b": 0.31, "c": 0.29}, 50))
    now = T0 + timedelta(seconds=10)
    assert plan(exp, obs, now).weights == plan(exp, obs, now).weights


def test_no_event_when_rounded_weights_do_not_change():
    exp = started()
    exp, _ = step(exp, observe(rewards({"a": 0.3, "b": 0.3, "c": 0.3}, 0)), T0 + timedelta(seconds=10))
    decided = plan(exp, observe(rewards({"a": 0.3, "b": 0.3, "c": 0.3}, 0)), T0 + timedelta(seconds=20))
    if decided.weights == weights_of(exp):
        assert "WeightChanged" not in reasons(decided)
    else:
        assert "WeightChanged" in reasons(decided)


def test_winner_concludes_and_takes_all_traffic():
    exp = started()
    exp, decided = step(
        exp, observe(rewards({"a": 0.1, "b": 0.2, "c": 0.5}, 3000)), T0 + timedelta(seconds=10)
    )
    assert decided.status.phase is ExperimentPhase.CONCLUDED
    winner = decided.status.winner
    assert winner is not None and winner.variant == "c" and winner.reason == "WinnerFound"
    assert winner.evidence["probabilityToBeBest"] >= 0.95 and winner.evidence["expectedLoss"] <= 0.005
    assert decided.weights == {"a": 0, "b": 0, "c": 100}
    assert "Concluded" in reasons(decided)
    progressing = next(c for c in decided.status.conditions if c.type == "Progressing")
    assert (progressing.status.value, progressing.reason) == ("False", "WinnerFound")
    # finished: later passes keep the winner's route and say nothing
    later = plan(exp, observe(rewards({"a": 0.9, "b": 0.2, "c": 0.1}, 9000)), T0 + timedelta(minutes=5))
    assert later.weights == {"a": 0, "b": 0, "c": 100} and later.events == ()
    assert later.status.winner is not None and later.status.winner.variant == "c"
    assert not evaluation_due(exp, T0 + timedelta(minutes=5))


def test_keep_leaves_the_split_as_it_was():
    exp = started()
    before = weights_of(exp)
    data = observe(rewards({"a": 0.1, "b": 0.2, "c": 0.5}, 3000))
    _, decided = step(experiment(exp.status, onConclusion="Keep"), data, T0 + timedelta(seconds=10))
    assert decided.status.phase is ExperimentPhase.CONCLUDED
    assert decided.weights == before


def test_not_enough_samples_keeps_running():
    exp = started()
    _, decided = step(exp, observe(rewards({"a": 0.0, "b": 0.0, "c": 1.0}, 150)), T0 + timedelta(seconds=10))
    assert decided.status.phase is ExperimentPhase.RUNNING and decided.status.winner is None
    assert "fewer than 200 samples" in (decided.status.message or "")


def test_max_duration_ends_without_a_winner():
    exp = experiment(maxDuration="1m")
    exp, _ = step(exp, observe(), T0)
    _, decided = step(exp, observe(rewards({"a": 0.3, "b": 0.3, "c": 0.3}, 50)), T0 + timedelta(minutes=1))
    assert decided.status.phase is ExperimentPhase.CONCLUDED
    assert decided.status.winner is not None and decided.status.winner.variant is None
    assert decided.status.winner.reason == "MaxDurationReached"
    assert sum(decided.weights.values()) == 100


# --- guardrails ---------------------------------------------------------------------------------

GUARDRAILS = [{"name": "errors", "query": 'sum(rate(x{variant="{{ variant }}"}[1m]))', "max": 0.1}]


def outcomes(**verdicts: str) -> dict[str, list[GuardrailOutcome]]:
    return {n: [GuardrailOutcome("errors", v, f"value {v}")] for n, v in verdicts.items()}


def test_a_breach_removes_the_variant_at_once_and_for_good():
    exp = experiment(guardrails=GUARDRAILS)
    exp, _ = step(exp, observe(), T0)
    data = rewards({"a": 0.2, "b": 0.2, "c": 0.2}, 40)
    exp, decided = step(
        exp, observe(data, outcomes(a="Pass", b="Fail", c="Inconclusive")), T0 + timedelta(seconds=10)
    )
    assert decided.weights["b"] == 0 and sum(decided.weights.values()) == 100
    states = {v.name: v.guardrail for v in decided.status.variants}
    assert states == {"a": GuardrailState.OK, "b": GuardrailState.BREACHED, "c": GuardrailState.UNKNOWN}
    assert "GuardrailBreached" in reasons(decided)
    b = next(v for v in decided.status.variants if v.name == "b")
    assert "errors" in (b.guardrail_message or "")
    # with no traffic the check cannot pass again, and a pass would not bring it back either
    _, again = step(exp, observe(data, outcomes(a="Pass", b="Pass", c="Pass")), T0 + timedelta(seconds=20))
    assert again.weights["b"] == 0
    assert {v.name: v.guardrail for v in again.status.variants}["b"] is GuardrailState.BREACHED
    assert "GuardrailBreached" not in reasons(again)


def test_every_variant_breached_is_degraded_and_keeps_the_route():
    exp = experiment(guardrails=GUARDRAILS)
    exp, _ = step(exp, observe(), T0)
    before = weights_of(exp)
    _, decided = step(
        exp,
        observe(rewards({"a": 0.2, "b": 0.2, "c": 0.2}, 40), outcomes(a="Fail", b="Fail", c="Fail")),
        T0 + timedelta(seconds=10),
    )
    assert decided.status.phase is ExperimentPhase.DEGRADED
    assert decided.weights == before
    degraded = next(c for c in decided.status.conditions if c.type == "Degraded")
    assert (degraded.status.value, degraded.reason) == ("True", "AllVariantsFailedGuardrails")


# --- trouble and actions ------------------------------------------------------------------------


def test_unreadable_rewards_degrade_and_keep_the_route():
    exp = started()
    _, decided = step(exp, observe("HTTP 503 from Prometheus"), T0 + timedelta(seconds=10))
    assert decided.status.phase is ExperimentPhase.DEGRADED
    assert decided.weights == weights_of(exp)
    assert "HTTP 503" in (decided.status.message or "")
    degraded = next(c for c in decided.status.conditions if c.type == "Degraded")
    assert degraded.reason == "RewardsUnavailable"


def test_rewards_outside_zero_one_for_bernoulli_are_reported_not_used():
    exp = started()
    bad = {n: RewardCounts(10, 10, 50) for n in NAMES}
    _, decided = step(exp, observe(bad), T0 + timedelta(seconds=10))
    assert decided.status.phase is ExperimentPhase.DEGRADED
    assert "rewardSum" in (decided.status.message or "") and decided.weights == weights_of(exp)


def test_gaussian_rewards_are_refused_with_the_reason():
    exp = experiment(reward={"distribution": "Gaussian"})
    exp, _ = step(exp, observe(), T0)
    _, decided = step(exp, observe(rewards({"a": 3, "b": 2, "c": 1}, 100)), T0 + timedelta(seconds=10))
    assert decided.status.phase is ExperimentPhase.DEGRADED
    assert "sum of squared rewards" in (decided.status.message or "")


def test_abort_stops_and_clears_the_annotation():
    exp = started()
    _, decided = step(exp, observe(action="abort"), T0 + timedelta(seconds=3))
    assert decided.status.phase is ExperimentPhase.STOPPED and decided.clear_action
    assert decided.status.winner is not None and decided.status.winner.reason == "Aborted"
    assert decided.weights == weights_of(exp)


def test_unknown_action_is_warned_about_and_cleared():
    decided = plan(started(), observe(action="explode"), T0 + timedelta(seconds=3))
    assert decided.clear_action and "UnknownAction" in reasons(decided)
    assert decided.status.phase is ExperimentPhase.RUNNING


def test_a_model_deployment_lost_mid_run_degrades_without_touching_the_route():
    exp = started()
    decided = plan(exp, ExperimentObservation(targets=targets("c")), T0 + timedelta(seconds=10))
    assert decided.weights is None and decided.status.phase is ExperimentPhase.DEGRADED


def test_condition_transition_time_moves_only_on_change():
    exp = started()
    ready0 = next(c for c in exp.status.conditions if c.type == "Ready")
    exp, _ = step(exp, observe(rewards({"a": 0.2, "b": 0.2, "c": 0.2}, 20)), T0 + timedelta(seconds=10))
    ready1 = next(c for c in exp.status.conditions if c.type == "Ready")
    assert ready1.last_transition_time == ready0.last_transition_time == T0


def test_resuming_from_the_stored_status_gives_the_same_pass():
    """An operator restarted between two passes continues exactly: everything is in the status."""
    exp = started()
    data = observe(rewards({"a": 0.1, "b": 0.2, "c": 0.5}, 100))
    live = plan(exp, data, T0 + timedelta(seconds=10))
    restored = Experiment.model_validate(exp.model_dump(mode="json", by_alias=True, exclude_none=True))
    again = plan(restored, data, T0 + timedelta(seconds=10))
    assert again.weights == live.weights
    assert again.status.model_dump() == live.status.model_dump()
