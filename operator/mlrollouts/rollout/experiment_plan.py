"""One pass of an Experiment, decided (pure): spec + status + what was observed + now -> the route
weights to apply, the next status and the events.

The controller observes (the ModelDeployments behind the variants, rewards and guardrails from
Prometheus when an evaluation is due) and applies what :func:`plan` returns. Everything needed to
resume lives in the status: the start time, the time of the last evaluation, the weights in force
(per variant), sticky guardrail breaches and the winner. Killing the operator at any moment and
starting it again continues the experiment where it was.

Time is an argument; the Monte-Carlo seed is derived from the experiment (``policy.seed`` or its
uid) and the number of elapsed intervals, so a repeated pass over the same data gives the same
weights.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

import numpy as np

from mlrollouts.api.common import Condition, ConditionStatus, parse_duration
from mlrollouts.api.experiment import (
    DecisionMethod,
    Experiment,
    ExperimentPhase,
    ExperimentSpec,
    ExperimentStatus,
    GuardrailState,
    Interval,
    OnConclusion,
    PolicyType,
    RewardDistribution,
    RewardSource,
    VariantStatus,
    Winner,
)
from mlrollouts.experiment import (
    BayesianRule,
    DecisionRule,
    EpsilonGreedyPolicy,
    Evaluation,
    ExperimentSettings,
    FixedPolicy,
    FrequentistRule,
    Policy,
    RewardModel,
    ThompsonSamplingPolicy,
    UCB1Policy,
    VariantObservation,
    evaluate,
    to_integer_weights,
)

TERMINAL = (ExperimentPhase.CONCLUDED, ExperimentPhase.STOPPED)
ABORT_ACTION = "abort"
KNOWN_ACTIONS = ("abort",)
# Bernoulli reward sums a hair above the feedback count come from Prometheus extrapolating two
# counters scraped together; beyond this share they are a client sending rewards outside [0, 1].
# The same share bounds the correction of a Gaussian sum of squares a hair below sum^2 / count.
REWARD_SUM_SLACK = 0.01
# How long to wait before looking again at an experiment whose variants are not serving yet.
NOT_READY_RETRY_SECONDS = 2.0


# --- observation -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class VariantTarget:
    """Where one variant's traffic goes, read from its ModelDeployment.

    ``problem`` says why the variant cannot receive traffic yet (no such ModelDeployment, no stable
    revision); then ``model`` and ``revision`` may be unset.
    """

    name: str
    model_deployment: str
    model: str | None = None
    revision: str | None = None
    problem: str | None = None

    @property
    def usable(self) -> bool:
        return self.problem is None and bool(self.model) and bool(self.revision)


@dataclass(frozen=True)
class RewardCounts:
    """Cumulative counts of one variant since the experiment started (eligible requests only)."""

    requests: float
    feedback: float
    reward_sum: float
    # Sum of squared rewards (the Gaussian reward model needs it; Bernoulli ignores it).
    reward_sum_squares: float = 0.0


@dataclass(frozen=True)
class GuardrailOutcome:
    """One guardrail check of one variant: ``verdict`` is Pass, Fail, Inconclusive or Error."""

    name: str
    verdict: str
    message: str = ""
    value: float | None = None


@dataclass(frozen=True)
class ExperimentObservation:
    """What the controller saw in this pass.

    ``rewards`` is ``None`` when no evaluation was due (nothing read), a mapping per variant, or the
    text of the error that kept them from being read. ``guardrails`` holds each variant's check
    outcomes (empty mapping when none are configured or none ran).
    """

    targets: Mapping[str, VariantTarget]
    rewards: Mapping[str, RewardCounts] | str | None = None
    guardrails: Mapping[str, Sequence[GuardrailOutcome]] = field(default_factory=dict)
    action: str | None = None


@dataclass(frozen=True)
class PlanEvent:
    type: str  # Normal | Warning
    reason: str
    message: str


@dataclass(frozen=True)
class ExperimentPlan:
    """What to do: the route weights (percent per variant; ``None`` leaves the route alone), the
    status to write, the events to emit, whether to remove the action annotation, and when to look
    again (seconds; ``None`` for a finished experiment)."""

    weights: dict[str, int] | None
    status: ExperimentStatus
    events: tuple[PlanEvent, ...] = ()
    clear_action: bool = False
    requeue_after: float | None = None
    evaluation: Evaluation | None = None


# --- API -> statistics settings ------------------------------------------------------------------


def settings_from_spec(spec: ExperimentSpec) -> ExperimentSettings:
    """The statistics core's settings for an Experiment spec (percent -> fractions).

    A ``Fixed`` split is the user's: no floor mixes into it and it applies at once, without the
    per-interval smoothing of adaptive policies.
    """
    policy: Policy
    ptype = spec.policy.type
    if ptype is PolicyType.FIXED:
        policy = FixedPolicy(weights={v.name: float(v.weight or 0) for v in spec.variants})
    elif ptype is PolicyType.EPSILON_GREEDY:
        policy = EpsilonGreedyPolicy(epsilon=spec.policy.epsilon, decay=spec.policy.epsilon_decay)
    elif ptype is PolicyType.UCB1:
        policy = UCB1Policy()
    else:
        policy = ThompsonSamplingPolicy()
    decision: DecisionRule
    rule = spec.decision
    if rule.method is DecisionMethod.FREQUENTIST:
        decision = FrequentistRule(alpha=rule.alpha, min_samples_per_variant=rule.min_samples_per_variant)
    else:
        decision = BayesianRule(
            probability_to_be_best=rule.probability_to_be_best,
            expected_loss=rule.expected_loss_threshold,
            min_samples_per_variant=rule.min_samples_per_variant,
        )
    fixed = ptype is PolicyType.FIXED
    return ExperimentSettings(
        policy=policy,
        reward_model=RewardModel.GAUSSIAN
        if spec.reward.distribution is RewardDistribution.GAUSSIAN
        else RewardModel.BERNOULLI,
        decision=decision,
        floor=0.0 if fixed else spec.policy.floor / 100,
        variant_floors={} if fixed else {v.name: v.floor / 100 for v in spec.variants if v.floor is not None},
        max_step=1.0 if fixed else spec.policy.max_weight_change / 100,
    )


def seed_base(experiment: Experiment) -> int:
    """``policy.seed``, or a number derived from the uid (stable across operator restarts)."""
    if experiment.spec.policy.seed is not None:
        return experiment.spec.policy.seed
    key = experiment.metadata.uid or f"{experiment.metadata.namespace}/{experiment.metadata.name}"
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big")


def interval_seconds(spec: ExperimentSpec) -> float:
    return max(parse_duration(spec.interval), 0.001)


def _aware(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def evaluation_due(experiment: Experiment, now: datetime) -> bool:
    """Whether this pass should read rewards and guardrails and recompute the split."""
    status = experiment.status
    if status is None or status.phase in TERMINAL:
        return False
    started, last = _aware(status.started_at), _aware(status.last_update_at)
    if started is None or last is None:
        return False  # the first pass only sets up the route: there is no data yet
    return now >= last + timedelta(seconds=interval_seconds(experiment.spec))


def next_evaluation_in(experiment: Experiment, status: ExperimentStatus, now: datetime) -> float | None:
    if status.phase in TERMINAL:
        return None
    last = _aware(status.last_update_at)
    if last is None:
        return NOT_READY_RETRY_SECONDS
    due = last + timedelta(seconds=interval_seconds(experiment.spec))
    return max(0.0, (due - now).total_seconds())


# --- conditions ----------------------------------------------------------------------------------


def _with_condition(
    conditions: list[Condition],
    type_: str,
    status: bool,
    reason: str,
    message: str,
    now: datetime,
    generation: int | None,
) -> list[Condition]:
    """Set one condition; its ``lastTransitionTime`` moves only when its status changes."""
    value = ConditionStatus.TRUE if status else ConditionStatus.FALSE
    old = next((c for c in conditions if c.type == type_), None)
    since = old.last_transition_time if old is not None and old.status == value else now
    new = Condition(
        type=type_,
        status=value,
        reason=reason,
        message=message,
        last_transition_time=since,
        observed_generation=generation,
    )
    return [c for c in conditions if c.type != type_] + [new]


@dataclass
class _Draft:
    """The status being built, with the events of the pass."""

    status: ExperimentStatus
    now: datetime
    generation: int | None
    events: list[PlanEvent] = field(default_factory=list)

    def condition(self, type_: str, status: bool, reason: str, message: str = "") -> None:
        self.status.conditions = _with_condition(
            self.status.conditions, type_, status, reason, message, self.now, self.generation
        )

    def health(self, degraded_reason: str | None, message: str = "") -> None:
        if degraded_reason is None:
            self.condition("Degraded", False, "AsExpected")
        else:
            self.condition("Degraded", True, degraded_reason, message)


# --- the plan ------------------------------------------------------------------------------------


def _current_weights(spec: ExperimentSpec, status: ExperimentStatus) -> dict[str, int]:
    old = {v.name: v.weight for v in status.variants}
    return {v.name: int(old.get(v.name, 0)) for v in spec.variants}


def _weights_text(weights: Mapping[str, int]) -> str:
    return ", ".join(f"{k}={v}" for k, v in weights.items())


def _weight_change_event(old: Mapping[str, int], new: Mapping[str, int]) -> PlanEvent | None:
    if dict(old) == dict(new):
        return None
    moves = ", ".join(f"{k} {old.get(k, 0)}->{v}" for k, v in new.items() if old.get(k, 0) != v)
    return PlanEvent("Normal", "WeightChanged", f"weights {moves} (now {_weights_text(new)})")


def _variant_entries(
    spec: ExperimentSpec, status: ExperimentStatus, weights: Mapping[str, int]
) -> list[VariantStatus]:
    """The per-variant status with new weights; statistics stay as last evaluated."""
    old = {v.name: v for v in status.variants}
    out = []
    for v in spec.variants:
        entry = old[v.name].model_copy() if v.name in old else VariantStatus(name=v.name)
        entry.weight = int(weights.get(v.name, 0))
        out.append(entry)
    return out


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def _guardrail_states(
    spec: ExperimentSpec, status: ExperimentStatus, outcomes: Mapping[str, Sequence[GuardrailOutcome]]
) -> tuple[dict[str, tuple[GuardrailState, str | None]], list[str]]:
    """Each variant's guardrail state, and the variants that breached in this pass.

    A breach is sticky: a variant removed from the split gets no traffic, so later checks cannot
    clear it. Without guardrails every variant is Ok; without a verdict yet it is Unknown.
    """
    old = {v.name: v for v in status.variants}
    states: dict[str, tuple[GuardrailState, str | None]] = {}
    newly: list[str] = []
    for v in spec.variants:
        before = old.get(v.name)
        if before is not None and before.guardrail is GuardrailState.BREACHED:
            states[v.name] = (GuardrailState.BREACHED, before.guardrail_message)
            continue
        if not spec.guardrails:
            states[v.name] = (GuardrailState.OK, None)
            continue
        results = list(outcomes.get(v.name, ()))
        failed = [r for r in results if r.verdict == "Fail"]
        if failed:
            text = "; ".join(f"{r.name}: {r.message}" for r in failed)
            states[v.name] = (GuardrailState.BREACHED, text)
            newly.append(v.name)
        elif results and all(r.verdict == "Pass" for r in results):
            states[v.name] = (GuardrailState.OK, None)
        elif results:
            pending = [r for r in results if r.verdict != "Pass"]
            text = "; ".join(f"{r.name}: {r.verdict} ({r.message})" for r in pending)
            states[v.name] = (GuardrailState.UNKNOWN, text)
        else:
            previous = before.guardrail if before is not None else GuardrailState.UNKNOWN
            states[v.name] = (previous, before.guardrail_message if before is not None else None)
    return states, newly


def _observations(
    spec: ExperimentSpec,
    rewards: Mapping[str, RewardCounts],
    guardrails: Mapping[str, tuple[GuardrailState, str | None]],
) -> list[VariantObservation]:
    bernoulli = spec.reward.distribution is RewardDistribution.BERNOULLI
    out = []
    for v in spec.variants:
        counts = rewards.get(v.name, RewardCounts(0.0, 0.0, 0.0))
        feedback = max(0.0, counts.feedback)
        reward_sum = counts.reward_sum if feedback > 0 else 0.0
        if bernoulli and feedback < reward_sum <= feedback * (1 + REWARD_SUM_SLACK):
            reward_sum = feedback
        squares = 0.0
        if not bernoulli and feedback > 0:
            # Count, sum and sum of squares are extrapolated separately by Prometheus, so the sum of
            # squares can fall a little short of sum^2 / count (a negative variance); only that
            # small shortfall is corrected; a larger one (a router without the metric) is reported.
            squares = max(0.0, counts.reward_sum_squares)
            least = reward_sum * reward_sum / feedback
            if squares < least * (1 - REWARD_SUM_SLACK):
                raise ValueError(
                    f"variant {v.name!r}: the sum of squared rewards ({squares:g}) is below "
                    f"sum^2 / count ({least:g}); Gaussian rewards need the router's "
                    "mlrouter_reward_sum_squares (a router without it reads as 0)"
                )
            squares = max(squares, least)
        out.append(
            VariantObservation(
                name=v.name,
                requests=max(0.0, counts.requests),
                reward_count=feedback,
                reward_sum=reward_sum,
                reward_sum_squares=squares,
                guardrail_failed=guardrails[v.name][0] is GuardrailState.BREACHED,
            )
        )
    return out


def _fill_statistics(
    entries: list[VariantStatus],
    evaluation: Evaluation,
    guardrails: Mapping[str, tuple[GuardrailState, str | None]],
) -> None:
    by_name = {s.name: s for s in evaluation.variants}
    for entry in entries:
        s = by_name[entry.name]
        entry.requests = s.requests
        entry.reward_count = s.reward_count
        entry.reward_sum = s.reward_sum
        entry.mean = _finite(s.mean)
        low, high = _finite(s.low), _finite(s.high)
        entry.interval = Interval(low=low, high=high) if low is not None and high is not None else None
        entry.probability_to_be_best = s.probability_to_be_best
        entry.expected_loss = _finite(s.expected_loss)
        entry.guardrail, entry.guardrail_message = guardrails[entry.name]


def _conclude(
    draft: _Draft,
    spec: ExperimentSpec,
    winner: str | None,
    reason: str,
    message: str,
    evidence: Mapping[str, float],
    phase: ExperimentPhase = ExperimentPhase.CONCLUDED,
) -> None:
    status = draft.status
    status.phase = phase
    status.winner = Winner(
        variant=winner,
        reason=reason,
        evidence={k: v for k, v in evidence.items() if math.isfinite(v)},
        decided_at=draft.now,
    )
    status.concluded_at = draft.now
    status.message = message
    draft.condition("Progressing", False, reason, message)
    kind = "Concluded" if phase is ExperimentPhase.CONCLUDED else "Stopped"
    draft.events.append(PlanEvent("Normal" if winner else "Warning", kind, message))


def _all_usable(targets: Mapping[str, VariantTarget], spec: ExperimentSpec) -> list[str]:
    problems = []
    for v in spec.variants:
        target = targets.get(v.name)
        if target is None:
            problems.append(f"variant {v.name!r}: ModelDeployment {v.model_deployment!r} not observed")
        elif not target.usable:
            problems.append(f"variant {v.name!r}: {target.problem or 'no stable revision yet'}")
    return problems


def _initial_weights(spec: ExperimentSpec, settings: ExperimentSettings, seed: int) -> dict[str, int]:
    observations = [VariantObservation(name=v.name) for v in spec.variants]
    first = evaluate(observations, {}, settings, [seed, 0])
    return _to_percent(spec, first.weights)


def _to_percent(spec: ExperimentSpec, weights: Mapping[str, float]) -> dict[str, int]:
    names = [v.name for v in spec.variants]
    ints = to_integer_weights(np.array([weights.get(n, 0.0) for n in names], dtype=np.float64))
    return {n: int(w) for n, w in zip(names, ints, strict=True)}


def plan(experiment: Experiment, observation: ExperimentObservation, now: datetime) -> ExperimentPlan:
    """Decide one pass (see the module docstring). Raises nothing for bad data: problems end up in
    the status (``Degraded`` with the reason) and the route stays as it was."""
    spec = experiment.spec
    old = experiment.status or ExperimentStatus()
    status = old.model_copy(deep=True)
    generation = experiment.metadata.generation
    status.observed_generation = generation
    draft = _Draft(status, now, generation)
    current = _current_weights(spec, old)
    have_route = any(w > 0 for w in current.values())
    action = (observation.action or "").strip().lower() or None
    clear_action = action is not None

    def done(weights: dict[str, int] | None, evaluation: Evaluation | None = None) -> ExperimentPlan:
        if weights is not None:
            status.variants = _variant_entries(spec, status, weights)
            draft.condition("Ready", True, "RouteApplied", f"route weights {_weights_text(weights)}")
        return ExperimentPlan(
            weights=weights,
            status=status,
            events=tuple(draft.events),
            clear_action=clear_action,
            requeue_after=next_evaluation_in(experiment, status, now),
            evaluation=evaluation,
        )

    if action is not None and action not in KNOWN_ACTIONS:
        draft.events.append(
            PlanEvent("Warning", "UnknownAction", f"unknown mlrollouts.io/action {action!r}; known: abort")
        )
        action = None

    problems = _all_usable(observation.targets, spec)

    # A finished experiment keeps its last route (winner or last split) and its verdict.
    if old.phase in TERMINAL:
        return done(current if have_route and not problems else None)

    if action == ABORT_ACTION:
        _conclude(draft, spec, None, "Aborted", "stopped by the abort action", {}, ExperimentPhase.STOPPED)
        return done(current if have_route and not problems else None)

    settings = settings_from_spec(spec)
    if problems:
        message = "; ".join(problems)
        draft.condition("Ready", False, "VariantNotReady", message)
        if old.started_at is None:
            status.phase = ExperimentPhase.PENDING
            draft.condition("Progressing", False, "WaitingForVariants", message)
            draft.health(None)
        else:
            status.phase = ExperimentPhase.DEGRADED
            draft.health("VariantNotReady", message)
        status.message = message
        return replace(done(None), requeue_after=NOT_READY_RETRY_SECONDS)

    seed = seed_base(experiment)
    if old.started_at is None or not have_route:
        weights = _initial_weights(spec, settings, seed)
        status.phase = ExperimentPhase.RUNNING
        status.started_at = _aware(old.started_at) or now
        status.last_update_at = now
        status.message = f"started with weights {_weights_text(weights)}"
        draft.condition("Progressing", True, "Running", status.message)
        draft.health(None)
        draft.events.append(PlanEvent("Normal", "Started", status.message))
        change = _weight_change_event(current, weights)
        if change is not None:
            draft.events.append(change)
        return done(weights)

    if observation.rewards is None:
        return done(current)

    started = _aware(old.started_at) or now
    elapsed = max(0.0, (now - started).total_seconds())
    intervals = int(elapsed // interval_seconds(spec))
    max_duration = parse_duration(spec.max_duration) if spec.max_duration else None
    max_reached = max_duration is not None and elapsed >= max_duration
    status.last_update_at = now

    if isinstance(observation.rewards, str):
        message = f"rewards could not be read: {observation.rewards}"
        if max_reached:
            _conclude(draft, spec, None, "MaxDurationReached", f"maxDuration reached; {message}", {})
            return done(current)
        status.phase = ExperimentPhase.DEGRADED
        status.message = message
        draft.health("RewardsUnavailable", message)
        draft.condition("Progressing", True, "Running", "waiting for readable rewards")
        return done(current)

    guardrails, newly = _guardrail_states(spec, old, observation.guardrails)
    for name in newly:
        draft.events.append(
            PlanEvent(
                "Warning",
                "GuardrailBreached",
                f"variant {name!r} removed from the split: {guardrails[name][1]}",
            )
        )
    if spec.reward.distribution is RewardDistribution.GAUSSIAN and spec.reward.source is RewardSource.QUERY:
        # The Gaussian model needs each variant's sum of squared rewards: the router's feedback
        # metrics have it, a single custom reward query does not.
        message = (
            "reward.distribution Gaussian needs reward.source Feedback (the router counts the sum of "
            "squared rewards per variant); a custom reward query gives only the sum"
        )
        status.phase = ExperimentPhase.DEGRADED
        status.message = message
        draft.health("RewardModelUnsupported", message)
        return done(current)
    try:
        evaluation = evaluate(
            _observations(spec, observation.rewards, guardrails),
            {k: float(v) for k, v in current.items()},
            settings,
            [seed, intervals],
            intervals_elapsed=intervals,
            max_duration_reached=max_reached,
        )
    except ValueError as exc:
        message = f"evaluation failed: {exc}"
        status.phase = ExperimentPhase.DEGRADED
        status.message = message
        draft.health("EvaluationFailed", message)
        return done(current)

    entries = _variant_entries(spec, status, current)
    _fill_statistics(entries, evaluation, guardrails)
    status.variants = entries
    decision = evaluation.decision
    new_weights = _to_percent(spec, evaluation.weights)
    healthy = [n for n, (state, _) in guardrails.items() if state is not GuardrailState.BREACHED]

    if not healthy:
        status.phase = ExperimentPhase.DEGRADED
        status.message = decision.message
        draft.health("AllVariantsFailedGuardrails", decision.message)
        draft.condition("Progressing", True, "Running", decision.message)
        return done(current, evaluation)

    if decision.concluded:
        target = current
        if decision.winner is not None and spec.on_conclusion is OnConclusion.ROUTE_TO_WINNER:
            target = {v.name: 100 if v.name == decision.winner else 0 for v in spec.variants}
        elif spec.on_conclusion is OnConclusion.ROUTE_TO_WINNER:
            target = new_weights  # no winner: the last split, without removed variants
        reason = decision.reason.value
        message = f"winner {decision.winner!r}: {decision.message}" if decision.winner else decision.message
        _conclude(draft, spec, decision.winner, reason, message, decision.evidence)
        draft.health(None)
        change = _weight_change_event(current, target)
        if change is not None:
            draft.events.append(change)
        return done(target, evaluation)

    status.phase = ExperimentPhase.RUNNING
    status.message = decision.message
    draft.condition("Progressing", True, "Running", decision.message)
    draft.health(None)
    change = _weight_change_event(current, new_weights)
    if change is not None:
        draft.events.append(change)
    return done(new_weights, evaluation)
