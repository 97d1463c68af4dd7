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
from datetime import datetime, timedelta

import numpy as np

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
from mlrollouts.core.conditions import DEGRADED, PROGRESSING, READY, ConditionStatus, set_condition
from mlrollouts.core.durations import parse_duration
from mlrollouts.core.events import Event
from mlrollouts.core.names import ACTION_ANNOTATION
from mlrollouts.core.times import aware
from mlrollouts.core.verdicts import Verdict
from mlrollouts.experiment.config import (
    BayesianRule,
    DecisionRule,
    EpsilonGreedyPolicy,
    ExperimentSettings,
    FixedPolicy,
    FrequentistRule,
    Policy,
    RewardModel,
    ThompsonSamplingPolicy,
    UCB1Policy,
    VariantObservation,
)
from mlrollouts.experiment.engine import Evaluation, evaluate
from mlrollouts.experiment.weights import to_integer_weights

TERMINAL = (ExperimentPhase.CONCLUDED, ExperimentPhase.STOPPED)
ABORT_ACTION = "abort"
KNOWN_ACTIONS = ("abort",)
# Bernoulli reward sums a hair above the feedback count come from Prometheus extrapolating two
# counters scraped together; beyond this share they are a client sending rewards outside [0, 1].
# The same share bounds the correction of a Gaussian sum of squares a hair below sum^2 / count.
REWARD_SUM_SLACK = 0.01
# How long to wait before looking again at an experiment whose variants are not serving yet.
NOT_READY_RETRY_SECONDS = 2.0
GAUSSIAN_NEEDS_FEEDBACK = (
    "reward.distribution Gaussian needs reward.source Feedback (the router counts the sum of "
    "squared rewards per variant); a custom reward query gives only the sum"
)


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
    """One guardrail check of one variant."""

    name: str
    verdict: Verdict
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
class ExperimentPlan:
    """What to do: the route weights (percent per variant; ``None`` leaves the route alone), the
    status to write, the events to emit, whether to remove the action annotation, and when to look
    again (seconds; ``None`` for a finished experiment)."""

    weights: dict[str, int] | None
    status: ExperimentStatus
    events: tuple[Event, ...] = ()
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


def evaluation_due(experiment: Experiment, now: datetime) -> bool:
    """Whether this pass should read rewards and guardrails and recompute the split."""
    status = experiment.status
    if status is None or status.phase in TERMINAL:
        return False
    started, last = aware(status.started_at), aware(status.last_update_at)
    if started is None or last is None:
        return False  # the first pass only sets up the route: there is no data yet
    return now >= last + timedelta(seconds=interval_seconds(experiment.spec))


def next_evaluation_in(experiment: Experiment, status: ExperimentStatus, now: datetime) -> float | None:
    if status.phase in TERMINAL:
        return None
    last = aware(status.last_update_at)
    if last is None:
        return NOT_READY_RETRY_SECONDS
    due = last + timedelta(seconds=interval_seconds(experiment.spec))
    return max(0.0, (due - now).total_seconds())


# --- the status being built ----------------------------------------------------------------------


def _current_weights(spec: ExperimentSpec, status: ExperimentStatus) -> dict[str, int]:
    old = {v.name: v.weight for v in status.variants}
    return {v.name: int(old.get(v.name, 0)) for v in spec.variants}


def _weights_text(weights: Mapping[str, int]) -> str:
    return ", ".join(f"{k}={v}" for k, v in weights.items())


def _weight_change_event(old: Mapping[str, int], new: Mapping[str, int]) -> Event | None:
    if dict(old) == dict(new):
        return None
    moves = ", ".join(f"{k} {old.get(k, 0)}->{v}" for k, v in new.items() if old.get(k, 0) != v)
    return Event.normal("WeightChanged", f"weights {moves} (now {_weights_text(new)})")


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


@dataclass
class _Draft:
    """One pass being decided: the experiment as it was, the status being built, the events."""

    experiment: Experiment
    now: datetime
    status: ExperimentStatus
    current: dict[str, int]
    """The route weights in force (percent per variant, 0 for a variant without a route yet)."""
    clear_action: bool = False
    events: list[Event] = field(default_factory=list)

    @classmethod
    def of(cls, experiment: Experiment, now: datetime) -> _Draft:
        old = experiment.status or ExperimentStatus()
        status = old.model_copy(deep=True)
        status.observed_generation = experiment.metadata.generation
        return cls(experiment, now, status, _current_weights(experiment.spec, old))

    @property
    def spec(self) -> ExperimentSpec:
        return self.experiment.spec

    @property
    def old(self) -> ExperimentStatus:
        return self.experiment.status or ExperimentStatus()

    @property
    def has_route(self) -> bool:
        return any(w > 0 for w in self.current.values())

    def condition(self, type_: str, status: bool, reason: str, message: str = "") -> None:
        self.status.conditions = set_condition(
            self.status.conditions,
            type_,
            ConditionStatus.TRUE if status else ConditionStatus.FALSE,
            reason,
            message,
            now=self.now,
            generation=self.experiment.metadata.generation,
        )

    def health(self, degraded_reason: str | None, message: str = "") -> None:
        if degraded_reason is None:
            self.condition(DEGRADED, False, "AsExpected")
        else:
            self.condition(DEGRADED, True, degraded_reason, message)

    def degraded(self, reason: str, message: str) -> None:
        self.status.phase = ExperimentPhase.DEGRADED
        self.status.message = message
        self.health(reason, message)

    def conclude(
        self,
        winner: str | None,
        reason: str,
        message: str,
        evidence: Mapping[str, float],
        phase: ExperimentPhase = ExperimentPhase.CONCLUDED,
    ) -> None:
        self.status.phase = phase
        self.status.winner = Winner(
            variant=winner,
            reason=reason,
            evidence={k: v for k, v in evidence.items() if math.isfinite(v)},
            decided_at=self.now,
        )
        self.status.concluded_at = self.now
        self.status.message = message
        self.condition(PROGRESSING, False, reason, message)
        kind = "Concluded" if phase is ExperimentPhase.CONCLUDED else "Stopped"
        self.events.append(Event.normal(kind, message) if winner else Event.warning(kind, message))

    def weight_change(self, weights: Mapping[str, int]) -> None:
        change = _weight_change_event(self.current, weights)
        if change is not None:
            self.events.append(change)

    def finish(self, weights: dict[str, int] | None, evaluation: Evaluation | None = None) -> ExperimentPlan:
        """The plan: route ``weights`` (``None`` leaves the route alone) and the status built."""
        if weights is not None:
            self.status.variants = _variant_entries(self.spec, self.status, weights)
            self.condition(READY, True, "RouteApplied", f"route weights {_weights_text(weights)}")
        return ExperimentPlan(
            weights=weights,
            status=self.status,
            events=tuple(self.events),
            clear_action=self.clear_action,
            requeue_after=next_evaluation_in(self.experiment, self.status, self.now),
            evaluation=evaluation,
        )


# --- the plan ------------------------------------------------------------------------------------


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
        failed = [r for r in results if r.verdict == Verdict.FAIL]
        if failed:
            text = "; ".join(f"{r.name}: {r.message}" for r in failed)
            states[v.name] = (GuardrailState.BREACHED, text)
            newly.append(v.name)
        elif results and all(r.verdict == Verdict.PASS for r in results):
            states[v.name] = (GuardrailState.OK, None)
        elif results:
            pending = [r for r in results if r.verdict != Verdict.PASS]
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
        # Prometheus extrapolates counts to the window's edges: the status shows whole requests
        entry.requests = round(s.requests)
        entry.reward_count = round(s.reward_count)
        entry.reward_sum = s.reward_sum
        entry.mean = _finite(s.mean)
        low, high = _finite(s.low), _finite(s.high)
        entry.interval = Interval(low=low, high=high) if low is not None and high is not None else None
        entry.probability_to_be_best = s.probability_to_be_best
        entry.expected_loss = _finite(s.expected_loss)
        entry.guardrail, entry.guardrail_message = guardrails[entry.name]


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
    draft = _Draft.of(experiment, now)
    action = _take_action(draft, observation.action)
    problems = _all_usable(observation.targets, experiment.spec)
    kept_route = draft.current if draft.has_route and not problems else None
    if draft.old.phase in TERMINAL:
        # A finished experiment keeps its last route (winner or last split) and its verdict.
        return draft.finish(kept_route)
    if action == ABORT_ACTION:
        draft.conclude(None, "Aborted", "stopped by the abort action", {}, ExperimentPhase.STOPPED)
        return draft.finish(kept_route)
    settings = settings_from_spec(experiment.spec)
    if problems:
        return _wait_for_variants(draft, problems)
    seed = seed_base(experiment)
    if draft.old.started_at is None or not draft.has_route:
        return _start(draft, settings, seed)
    if observation.rewards is None:
        return draft.finish(draft.current)
    return _evaluate(draft, observation.rewards, observation.guardrails, settings, seed)


def _take_action(draft: _Draft, raw: str | None) -> str | None:
    """The requested action, if it is one the experiment knows (an unknown one is only reported);
    either way the annotation has been handled and is removed."""
    action = (raw or "").strip().lower() or None
    draft.clear_action = action is not None
    if action is not None and action not in KNOWN_ACTIONS:
        draft.events.append(
            Event.warning("UnknownAction", f"unknown {ACTION_ANNOTATION} {action!r}; known: abort")
        )
        return None
    return action


def _wait_for_variants(draft: _Draft, problems: list[str]) -> ExperimentPlan:
    """Some variant cannot receive traffic: Pending before the start, Degraded after it."""
    message = "; ".join(problems)
    draft.condition(READY, False, "VariantNotReady", message)
    if draft.old.started_at is None:
        draft.status.phase = ExperimentPhase.PENDING
        draft.condition(PROGRESSING, False, "WaitingForVariants", message)
        draft.health(None)
        draft.status.message = message
    else:
        draft.degraded("VariantNotReady", message)
    return replace(draft.finish(None), requeue_after=NOT_READY_RETRY_SECONDS)


def _start(draft: _Draft, settings: ExperimentSettings, seed: int) -> ExperimentPlan:
    """The first split (or the first after the route was lost); there is no data to evaluate yet."""
    weights = _initial_weights(draft.spec, settings, seed)
    status = draft.status
    status.phase = ExperimentPhase.RUNNING
    status.started_at = aware(draft.old.started_at) or draft.now
    status.last_update_at = draft.now
    status.message = f"started with weights {_weights_text(weights)}"
    draft.condition(PROGRESSING, True, "Running", status.message)
    draft.health(None)
    draft.events.append(Event.normal("Started", status.message))
    draft.weight_change(weights)
    return draft.finish(weights)


def _evaluate(
    draft: _Draft,
    rewards: Mapping[str, RewardCounts] | str,
    guardrail_outcomes: Mapping[str, Sequence[GuardrailOutcome]],
    settings: ExperimentSettings,
    seed: int,
) -> ExperimentPlan:
    """An evaluation is due: rewards and guardrails in, the next split and maybe a winner out."""
    spec, now = draft.spec, draft.now
    elapsed = max(0.0, (now - (aware(draft.old.started_at) or now)).total_seconds())
    intervals = int(elapsed // interval_seconds(spec))
    max_duration = parse_duration(spec.max_duration) if spec.max_duration else None
    max_reached = max_duration is not None and elapsed >= max_duration
    draft.status.last_update_at = now
    if isinstance(rewards, str):
        return _rewards_unreadable(draft, rewards, max_reached)
    guardrails = _guardrails(draft, guardrail_outcomes)
    if spec.reward.distribution is RewardDistribution.GAUSSIAN and spec.reward.source is RewardSource.QUERY:
        # The Gaussian model needs each variant's sum of squared rewards: the router's feedback
        # metrics have it, a single custom reward query does not.
        draft.degraded("RewardModelUnsupported", GAUSSIAN_NEEDS_FEEDBACK)
        return draft.finish(draft.current)
    try:
        evaluation = evaluate(
            _observations(spec, rewards, guardrails),
            {k: float(v) for k, v in draft.current.items()},
            settings,
            [seed, intervals],
            intervals_elapsed=intervals,
            max_duration_reached=max_reached,
        )
    except ValueError as exc:
        draft.degraded("EvaluationFailed", f"evaluation failed: {exc}")
        return draft.finish(draft.current)
    return _decided(draft, evaluation, guardrails)


def _rewards_unreadable(draft: _Draft, error: str, max_reached: bool) -> ExperimentPlan:
    message = f"rewards could not be read: {error}"
    if max_reached:
        draft.conclude(None, "MaxDurationReached", f"maxDuration reached; {message}", {})
        return draft.finish(draft.current)
    draft.degraded("RewardsUnavailable", message)
    draft.condition(PROGRESSING, True, "Running", "waiting for readable rewards")
    return draft.finish(draft.current)


def _guardrails(
    draft: _Draft, outcomes: Mapping[str, Sequence[GuardrailOutcome]]
) -> dict[str, tuple[GuardrailState, str | None]]:
    """Each variant's guardrail state; a variant that breaches in this pass is announced."""
    guardrails, newly = _guardrail_states(draft.spec, draft.old, outcomes)
    for name in newly:
        draft.events.append(
            Event.warning(
                "GuardrailBreached", f"variant {name!r} removed from the split: {guardrails[name][1]}"
            )
        )
    return guardrails


def _decided(
    draft: _Draft, evaluation: Evaluation, guardrails: Mapping[str, tuple[GuardrailState, str | None]]
) -> ExperimentPlan:
    """Statistics into the status, then: all variants out, a conclusion, or the next split."""
    entries = _variant_entries(draft.spec, draft.status, draft.current)
    _fill_statistics(entries, evaluation, guardrails)
    draft.status.variants = entries
    decision = evaluation.decision
    new_weights = _to_percent(draft.spec, evaluation.weights)
    if all(state is GuardrailState.BREACHED for state, _ in guardrails.values()):
        draft.degraded("AllVariantsFailedGuardrails", decision.message)
        draft.condition(PROGRESSING, True, "Running", decision.message)
        return draft.finish(draft.current, evaluation)
    if decision.concluded:
        return _concluded(draft, evaluation, new_weights)
    draft.status.phase = ExperimentPhase.RUNNING
    draft.status.message = decision.message
    draft.condition(PROGRESSING, True, "Running", decision.message)
    draft.health(None)
    draft.weight_change(new_weights)
    return draft.finish(new_weights, evaluation)


def _concluded(draft: _Draft, evaluation: Evaluation, new_weights: dict[str, int]) -> ExperimentPlan:
    """A winner (or the end without one): with RouteToWinner the route follows the verdict."""
    spec, decision = draft.spec, evaluation.decision
    target = draft.current
    if decision.winner is not None and spec.on_conclusion is OnConclusion.ROUTE_TO_WINNER:
        target = {v.name: 100 if v.name == decision.winner else 0 for v in spec.variants}
    elif spec.on_conclusion is OnConclusion.ROUTE_TO_WINNER:
        target = new_weights  # no winner: the last split, without removed variants
    message = f"winner {decision.winner!r}: {decision.message}" if decision.winner else decision.message
    draft.conclude(decision.winner, decision.reason.value, message, decision.evidence)
    draft.health(None)
    draft.weight_change(target)
    return draft.finish(target, evaluation)
