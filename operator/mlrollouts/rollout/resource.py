"""Between the ModelDeployment resource (``mlrollouts.api``) and the state machine's values.

The resource status is the only memory of a rollout. Three facts have no field of their own and are
kept in standard places instead, so they survive an API server that prunes unknown status fields:

- when the rollout was paused and why: ``lastTransitionTime`` and ``reason`` of the ``Progressing``
  condition (status ``Unknown`` while paused);
- when the current weights were last changed or confirmed: ``lastTransitionTime`` of the
  ``TrafficVerified`` condition;
- "promoting" (all steps done or skipped by ``promote``): ``currentStep`` equal to the number of steps.

A retired revision's ``finishedAt`` is the time it is (or was) scaled to zero.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from mlrollouts.api import AnalysisRun as ApiAnalysisRun
from mlrollouts.api import (
    AnalysisStatus,
    ConditionStatus,
    ModelDeployment,
    ModelDeploymentStatus,
    RevisionOutcome,
    RevisionWeight,
    parse_duration,
)
from mlrollouts.api import (
    Condition as ApiCondition,
)
from mlrollouts.api import (
    RevisionRecord as ApiRevisionRecord,
)
from mlrollouts.rollout.model import (
    Action,
    AnalysisPolicy,
    AnalysisRecord,
    AnalysisRun,
    CheckOutcome,
    Condition,
    FailureMode,
    OnInconclusive,
    Phase,
    RevisionRecord,
    RolloutSpec,
    RolloutState,
    Step,
    StepKind,
    Strategy,
    Verdict,
)
from mlrollouts.rollout.revision import revision_hash

TRAFFIC_VERIFIED = "TrafficVerified"
ACTION_ANNOTATION = "mlrollouts.io/action"
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def target_revision(md: ModelDeployment) -> str:
    """Hash of ``spec.model`` and ``spec.serving`` minus ``replicas``: scaling is not a new revision."""
    model = md.spec.model.model_dump(mode="json", by_alias=True, exclude_none=True)
    serving = md.spec.serving.model_dump(mode="json", by_alias=True, exclude_none=True)
    serving.pop("replicas", None)
    return revision_hash(model, serving)


def rollout_spec(md: ModelDeployment, history_size: int = 10, poll_interval: float = 1.0) -> RolloutSpec:
    rollout = md.spec.rollout
    steps: list[Step] = []
    for s in rollout.steps:
        if s.shadow is not None:
            steps.append(Step(StepKind.SHADOW, s.shadow.percent, parse_duration(s.shadow.duration)))
        elif s.weight is not None:
            duration = parse_duration(s.duration) if s.duration is not None else None
            steps.append(Step(StepKind.WEIGHT, s.weight, duration))
        else:
            steps.append(Step(StepKind.APPROVAL))
    analysis = rollout.analysis
    policy = AnalysisPolicy(enabled=False)
    if analysis is not None:
        policy = AnalysisPolicy(
            interval=parse_duration(analysis.interval),
            failure_limit=analysis.failure_limit,
            failure_mode=FailureMode(analysis.failure_mode.value),
            inconclusive_limit=analysis.inconclusive_limit,
            on_inconclusive=OnInconclusive(analysis.on_inconclusive.value),
            enabled=bool(analysis.checks),
        )
    return RolloutSpec(
        target_revision=target_revision(md),
        replicas=md.spec.serving.replicas,
        generation=md.metadata.generation or 1,
        strategy=Strategy(rollout.strategy.value),
        steps=tuple(steps),
        analysis=policy,
        progress_deadline=parse_duration(rollout.progress_deadline),
        scale_down_delay=parse_duration(rollout.scale_down_delay),
        revision_history_limit=rollout.revision_history_limit,
        paused=rollout.paused,
        history_size=history_size,
        poll_interval=poll_interval,
    )


def requested_action(md: ModelDeployment) -> Action | str | None:
    """The action annotation: an :class:`Action`, ``None`` when absent, or the raw text when unknown."""
    raw = md.metadata.annotations.get(ACTION_ANNOTATION)
    if raw is None:
        return None
    try:
        return Action(raw.strip().lower())
    except ValueError:
        return raw


def _aware(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _group_runs(runs: Iterable[ApiAnalysisRun]) -> tuple[AnalysisRecord, ...]:
    grouped: dict[tuple[datetime, int], list[CheckOutcome]] = {}
    for run in runs:
        key = (_aware(run.time) or EPOCH, run.step or 0)
        grouped.setdefault(key, []).append(
            CheckOutcome(
                name=run.check,
                verdict=Verdict(run.verdict.value),
                value=run.value,
                stable_value=run.stable_value,
                samples=run.samples,
                message=run.message or "",
            )
        )
    records = []
    for (at, step), checks in sorted(grouped.items(), key=lambda kv: kv[0]):
        verdict = AnalysisRun(at, tuple(checks)).verdict
        records.append(AnalysisRecord(at=at, step=step, verdict=verdict, checks=tuple(checks)))
    return tuple(records)


def rollout_state(md: ModelDeployment, spec: RolloutSpec) -> RolloutState:
    """The state machine's view of ``md.status`` (an empty state for a new resource)."""
    status = md.status
    if status is None:
        return RolloutState()
    conditions = tuple(
        Condition(
            type=c.type,
            status=c.status.value,
            reason=c.reason,
            message=c.message,
            last_transition_time=_aware(c.last_transition_time) or EPOCH,
            observed_generation=c.observed_generation or 0,
        )
        for c in status.conditions
    )
    by_type = {c.type: c for c in conditions}
    phase = Phase(status.phase.value)
    paused_at = pause_reason = None
    progressing = by_type.get("Progressing")
    if phase is Phase.PAUSED and progressing is not None:
        paused_at, pause_reason = progressing.last_transition_time, progressing.reason
    verified_cond = by_type.get(TRAFFIC_VERIFIED)
    steps = spec.effective_steps()
    step_index = status.current_step or 0
    candidate = status.candidate_revision
    promoting = candidate is not None and step_index >= len(steps) and phase is Phase.PROGRESSING
    revisions = tuple(
        RevisionRecord(
            revision=r.revision,
            replicas=spec.replicas,
            created_at=_aware(r.created_at) or EPOCH,
            scale_down_at=_aware(r.finished_at),
        )
        for r in status.revisions
    )
    return RolloutState(
        phase=phase,
        message=status.message or "",
        observed_generation=status.observed_generation or 0,
        stable=status.stable_revision,
        candidate=candidate,
        failed_revision=status.failed_revision,
        step_index=step_index,
        step_started_at=_aware(status.step_started_at),
        rollout_started_at=_aware(status.rollout_started_at),
        weights_changed_at=verified_cond.last_transition_time if verified_cond else None,
        desired_weights={w.revision: w.desired for w in status.weights},
        verified_weights={w.revision: w.verified for w in status.weights if w.verified is not None},
        shadow=next(((w.revision, w.shadow) for w in status.weights if w.shadow), None),
        paused_at=paused_at,
        pause_reason=pause_reason,
        promoting=promoting,
        last_analysis_at=_aware(status.analysis.last_run_at),
        failures=status.analysis.total_failures,
        consecutive_failures=status.analysis.consecutive_failures,
        inconclusive=status.analysis.inconclusive_count,
        history=_group_runs(status.analysis.runs),
        revisions=revisions,
        conditions=conditions,
    )


def weights_summary(weights: dict[str, int]) -> str:
    return " ".join(f"{rev}:{w}" for rev, w in sorted(weights.items(), key=lambda kv: (-kv[1], kv[0])))


def status_from_state(
    state: RolloutState,
    spec: RolloutSpec,
    previous: ModelDeploymentStatus | None,
    verified: bool,
    now: datetime,
    model_uri: str | None = None,
    model_version: str | None = None,
) -> dict[str, Any]:
    """The full ``status`` to write back (camelCase JSON), keeping fields this machine does not own."""
    old_records = {r.revision: r for r in (previous.revisions if previous else [])}
    records = []
    for r in state.revisions:
        old = old_records.get(r.revision)
        if r.revision == state.stable:
            outcome: RevisionOutcome | None = RevisionOutcome.SERVING
        elif r.revision == state.candidate:
            outcome = None
        elif r.revision == state.failed_revision:
            outcome = RevisionOutcome.ROLLED_BACK
        else:
            outcome = RevisionOutcome.SUPERSEDED
        records.append(
            ApiRevisionRecord(
                revision=r.revision,
                model_uri=old.model_uri
                if old
                else (model_uri if r.revision == spec.target_revision else None),
                model_version=(
                    old.model_version
                    if old
                    else (model_version if r.revision == spec.target_revision else None)
                ),
                created_at=r.created_at,
                finished_at=r.scale_down_at,
                outcome=outcome,
                message=old.message if old else None,
            )
        )
    revisions_seen = list(dict.fromkeys([*state.desired_weights, *state.verified_weights]))
    if state.shadow is not None and state.shadow[0] not in revisions_seen:
        revisions_seen.append(state.shadow[0])
    weights = [
        RevisionWeight(
            revision=rev,
            desired=state.desired_weights.get(rev, 0),
            verified=state.verified_weights.get(rev),
            shadow=state.shadow[1] if state.shadow and state.shadow[0] == rev else None,
        )
        for rev in revisions_seen
    ]
    runs = [
        ApiAnalysisRun(
            time=h.at,
            check=c.name,
            verdict=c.verdict.value,
            revision=state.candidate,
            step=h.step,
            value=c.value,
            stable_value=c.stable_value,
            samples=c.samples,
            message=c.message or None,
        )
        for h in state.history
        for c in h.checks
    ]
    # the TrafficVerified condition carries the time the weights last changed or were confirmed
    conditions = list(state.conditions)
    old_verified = next((c for c in conditions if c.type == TRAFFIC_VERIFIED), None)
    cond_status = "True" if verified else "False"
    since = state.weights_changed_at or now
    if old_verified is not None and old_verified.status == cond_status and not verified:
        since = min(old_verified.last_transition_time, since)
    elif old_verified is not None and old_verified.status == cond_status:
        since = old_verified.last_transition_time
    elif verified:
        since = now
    conditions = [c for c in conditions if c.type != TRAFFIC_VERIFIED]
    conditions.append(
        Condition(
            type=TRAFFIC_VERIFIED,
            status=cond_status,
            reason="WeightsConfirmed" if verified else "WaitingForTrafficProvider",
            message=(
                f"traffic provider confirms {weights_summary(state.desired_weights)}"
                if verified
                else f"waiting for the traffic provider to confirm {weights_summary(state.desired_weights)}"
            ),
            last_transition_time=since,
            observed_generation=spec.generation,
        )
    )
    status = ModelDeploymentStatus(
        phase=state.phase.value,
        observed_generation=spec.generation,
        stable_revision=state.stable,
        candidate_revision=state.candidate,
        failed_revision=state.failed_revision,
        current_step=(len(spec.effective_steps()) if state.promoting else state.step_index)
        if state.candidate
        else None,
        step_started_at=state.step_started_at,
        rollout_started_at=state.rollout_started_at,
        weights=weights,
        weights_summary=weights_summary({k: v for k, v in state.desired_weights.items() if v > 0}),
        analysis=AnalysisStatus(
            runs=runs,
            consecutive_failures=state.consecutive_failures,
            total_failures=state.failures,
            inconclusive_count=state.inconclusive,
            last_run_at=state.last_analysis_at,
        ),
        revisions=records,
        conditions=[
            ApiCondition(
                type=c.type,
                status=ConditionStatus(c.status),
                reason=c.reason,
                message=c.message,
                last_transition_time=c.last_transition_time,
                observed_generation=c.observed_generation,
            )
            for c in conditions
        ],
        message=state.message or None,
        learning=previous.learning if previous else None,
    )
    return status.model_dump(mode="json", by_alias=True, exclude_none=True)
