"""Between the ModelDeployment resource (``mlrollouts.api``) and the state machine's values.

The resource status is the only memory of a rollout. Three facts have no field of their own and are
kept in standard places instead, so they survive an API server that prunes unknown status fields:

- when the rollout was paused and why: ``lastTransitionTime`` and ``reason`` of the ``Progressing``
  condition (status ``Unknown`` while paused);
- when the current weights were last changed or confirmed: ``lastTransitionTime`` of the
  ``TrafficVerified`` condition;
- "promoting" (all steps done or skipped by ``promote-full``): ``currentStep`` equal to the number of steps.

A retired revision's ``finishedAt`` is the time it is (or was) scaled to zero. A revision rolled out
again keeps each earlier attempt, as it ended, in ``previousAttempts``; ``attempt``, ``startedAt``,
``outcome`` and ``message`` of the record are the current attempt's.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from mlrollouts.api import AnalysisRun as ApiAnalysisRun
from mlrollouts.api import (
    AnalysisStatus,
    ModelDeployment,
    ModelDeploymentStatus,
    Phase,
    RevisionOutcome,
    RevisionWeight,
)
from mlrollouts.api import (
    RevisionRecord as ApiRevisionRecord,
)
from mlrollouts.api.modeldeployment import RevisionAttempt as ApiRevisionAttempt
from mlrollouts.core.conditions import PROGRESSING, Condition, ConditionStatus
from mlrollouts.core.durations import parse_duration
from mlrollouts.core.names import ACTION_ANNOTATION
from mlrollouts.core.times import aware
from mlrollouts.core.verdicts import CheckOutcome
from mlrollouts.rollout.model import (
    Action,
    AnalysisPolicy,
    AnalysisRecord,
    AnalysisRun,
    RevisionAttempt,
    RevisionRecord,
    RolloutSpec,
    RolloutState,
    Step,
    StepKind,
)
from mlrollouts.rollout.revision import revision_hash

TRAFFIC_VERIFIED = "TrafficVerified"
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MEASUREMENT = ("verdict", "value", "stable_value", "samples")
"""What a check found; a status record (``analysis.runs[]``) and a :class:`CheckOutcome` keep it
under the same names."""


def revision_template(md: ModelDeployment) -> dict[str, Any]:
    """``spec.model`` and ``spec.serving`` minus ``replicas``: scaling is not a new revision."""
    model = md.spec.model.model_dump(mode="json", by_alias=True, exclude_none=True)
    serving = md.spec.serving.model_dump(mode="json", by_alias=True, exclude_none=True)
    serving.pop("replicas", None)
    return {"model": model, "serving": serving}


def target_revision(md: ModelDeployment) -> str:
    """Hash of the :func:`revision_template`."""
    template = revision_template(md)
    return revision_hash(template["model"], template["serving"])


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
            failure_mode=analysis.failure_mode,
            inconclusive_limit=analysis.inconclusive_limit,
            on_inconclusive=analysis.on_inconclusive,
            enabled=bool(analysis.checks),
        )
    return RolloutSpec(
        target_revision=target_revision(md),
        replicas=md.spec.serving.replicas,
        generation=md.metadata.generation or 1,
        strategy=rollout.strategy,
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


def _measurement(source: ApiAnalysisRun | CheckOutcome) -> dict[str, Any]:
    return {name: getattr(source, name) for name in MEASUREMENT}


def _shown(measurement: dict[str, Any]) -> dict[str, Any]:
    """A measurement as the status shows it: Prometheus extrapolates counts to the window's edges,
    and people count whole requests."""
    samples = measurement.get("samples")
    if samples is None or not math.isfinite(samples):
        return measurement
    return {**measurement, "samples": round(samples)}


def analysis_records(runs: Iterable[ApiAnalysisRun]) -> tuple[AnalysisRecord, ...]:
    """The analysis records a status's runs (one entry per check) were written from."""
    grouped: dict[tuple[datetime, int, str], list[CheckOutcome]] = {}
    for run in runs:
        key = (aware(run.time) or EPOCH, run.step or 0, run.revision or "")
        grouped.setdefault(key, []).append(
            CheckOutcome(name=run.check, message=run.message or "", **_measurement(run))
        )
    records = []
    for (at, step, revision), checks in sorted(grouped.items(), key=lambda kv: kv[0]):
        verdict = AnalysisRun(at, tuple(checks)).verdict
        records.append(
            AnalysisRecord(at=at, step=step, verdict=verdict, checks=tuple(checks), revision=revision or None)
        )
    return tuple(records)


def _conditions(status: ModelDeploymentStatus) -> tuple[Condition, ...]:
    """The status conditions, each with a transition time and a generation for the machine."""
    return tuple(
        replace(
            c,
            last_transition_time=aware(c.last_transition_time) or EPOCH,
            observed_generation=c.observed_generation or 0,
        )
        for c in status.conditions
    )


def rollout_state(md: ModelDeployment, spec: RolloutSpec) -> RolloutState:
    """The state machine's view of ``md.status`` (an empty state for a new resource)."""
    status = md.status
    if status is None:
        return RolloutState()
    conditions = _conditions(status)
    by_type = {c.type: c for c in conditions}
    progressing = by_type.get(PROGRESSING) if status.phase is Phase.PAUSED else None
    verified_cond = by_type.get(TRAFFIC_VERIFIED)
    step_index = status.current_step or 0
    candidate = status.candidate_revision
    promoting = (
        candidate is not None
        and step_index >= len(spec.effective_steps())
        and status.phase is Phase.PROGRESSING
    )
    revisions = tuple(
        RevisionRecord(
            revision=r.revision,
            replicas=spec.replicas,
            created_at=aware(r.created_at) or EPOCH,
            scale_down_at=aware(r.finished_at),
            # Serving is what the stable is now, not how a revision ended
            outcome=r.outcome if r.outcome is not RevisionOutcome.SERVING else None,
            message=r.message,
            attempt=r.attempt or 1,
            started_at=aware(r.started_at),
            previous_attempts=tuple(
                _attempt(a, aware(r.created_at) or EPOCH) for a in r.previous_attempts or ()
            ),
        )
        for r in status.revisions
    )
    return RolloutState(
        phase=status.phase,
        message=status.message or "",
        observed_generation=status.observed_generation or 0,
        stable=status.stable_revision,
        candidate=candidate,
        failed_revision=status.failed_revision,
        step_index=step_index,
        step_started_at=aware(status.step_started_at),
        rollout_started_at=aware(status.rollout_started_at),
        weights_changed_at=verified_cond.last_transition_time if verified_cond else None,
        desired_weights={w.revision: w.desired for w in status.weights},
        verified_weights={w.revision: w.verified for w in status.weights if w.verified is not None},
        shadow=next(((w.revision, w.shadow) for w in status.weights if w.shadow), None),
        paused_at=progressing.last_transition_time if progressing else None,
        pause_reason=progressing.reason if progressing else None,
        promoting=promoting,
        last_analysis_at=aware(status.analysis.last_run_at),
        failures=status.analysis.total_failures,
        consecutive_failures=status.analysis.consecutive_failures,
        inconclusive=status.analysis.inconclusive_count,
        history=analysis_records(status.analysis.runs),
        revisions=revisions,
        conditions=conditions,
    )


def _attempt(attempt: ApiRevisionAttempt, created_at: datetime) -> RevisionAttempt:
    started = aware(attempt.started_at) or created_at
    return RevisionAttempt(
        attempt=attempt.attempt,
        started_at=started,
        finished_at=aware(attempt.finished_at) or started,
        outcome=attempt.outcome,
        message=attempt.message,
    )


def weights_summary(weights: dict[str, int]) -> str:
    return " ".join(f"{rev}:{w}" for rev, w in sorted(weights.items(), key=lambda kv: (-kv[1], kv[0])))


def _outcome(state: RolloutState, record: RevisionRecord) -> RevisionOutcome | None:
    """The recorded outcome; the stable revision that has none yet (the first one) is Serving."""
    if record.outcome is None and record.revision == state.stable:
        return RevisionOutcome.SERVING
    return record.outcome


def _revision_records(
    state: RolloutState,
    spec: RolloutSpec,
    previous: ModelDeploymentStatus | None,
    model_uri: str | None,
    model_version: str | None,
    template: dict[str, Any] | None = None,
) -> list[ApiRevisionRecord]:
    """The revision history; what the model was is known only for the revision being built, so
    older records keep what they said."""
    old_records = {r.revision: r for r in (previous.revisions if previous else [])}
    records = []
    for r in state.revisions:
        old = old_records.get(r.revision)
        target = r.revision == spec.target_revision
        records.append(
            ApiRevisionRecord(
                revision=r.revision,
                model_uri=old.model_uri if old else (model_uri if target else None),
                model_version=old.model_version if old else (model_version if target else None),
                template=old.template if old and old.template else (template if target else None),
                created_at=r.created_at,
                attempt=r.attempt,
                started_at=r.attempt_started_at,
                finished_at=r.scale_down_at,
                outcome=_outcome(state, r),
                message=r.message,
                previous_attempts=[
                    ApiRevisionAttempt(
                        attempt=a.attempt,
                        started_at=a.started_at,
                        finished_at=a.finished_at,
                        outcome=a.outcome,
                        message=a.message,
                    )
                    for a in r.previous_attempts
                ]
                or None,
            )
        )
    return records


def _revision_weights(state: RolloutState) -> list[RevisionWeight]:
    revisions = list(dict.fromkeys([*state.desired_weights, *state.verified_weights]))
    if state.shadow is not None and state.shadow[0] not in revisions:
        revisions.append(state.shadow[0])
    return [
        RevisionWeight(
            revision=rev,
            desired=state.desired_weights.get(rev, 0),
            verified=state.verified_weights.get(rev),
            shadow=state.shadow[1] if state.shadow and state.shadow[0] == rev else None,
        )
        for rev in revisions
    ]


def analysis_runs(records: Iterable[AnalysisRecord]) -> list[ApiAnalysisRun]:
    """The status entries (one per check) of analysis records; :func:`analysis_records` reads them back."""
    return [
        ApiAnalysisRun(
            time=h.at,
            check=c.name,
            revision=h.revision,
            step=h.step,
            message=c.message or None,
            **_shown(_measurement(c)),
        )
        for h in records
        for c in h.checks
    ]


def _analysis_status(state: RolloutState) -> AnalysisStatus:
    return AnalysisStatus(
        runs=analysis_runs(state.history),
        consecutive_failures=state.consecutive_failures,
        total_failures=state.failures,
        inconclusive_count=state.inconclusive,
        last_run_at=state.last_analysis_at,
    )


def _traffic_verified(state: RolloutState, spec: RolloutSpec, verified: bool, now: datetime) -> Condition:
    """``TrafficVerified`` keeps a time rather than following the transition rule: the time the
    weights were last changed or confirmed, from which the progress deadline counts."""
    summary = weights_summary(state.desired_weights)
    if verified:
        return Condition(
            TRAFFIC_VERIFIED,
            ConditionStatus.TRUE,
            "WeightsConfirmed",
            f"traffic provider confirms {summary}",
            now,
            spec.generation,
        )
    return Condition(
        TRAFFIC_VERIFIED,
        ConditionStatus.FALSE,
        "WaitingForTrafficProvider",
        f"waiting for the traffic provider to confirm {summary}",
        state.weights_changed_at or now,
        spec.generation,
    )


def status_from_state(
    state: RolloutState,
    spec: RolloutSpec,
    previous: ModelDeploymentStatus | None,
    verified: bool,
    now: datetime,
    model_uri: str | None = None,
    model_version: str | None = None,
    template: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The full ``status`` to write back (camelCase JSON), keeping fields this machine does not own.

    ``state`` is a decided state: its conditions are the machine's, ``TrafficVerified`` is added here.
    """
    conditions = [c for c in state.conditions if c.type != TRAFFIC_VERIFIED]
    steps = len(spec.effective_steps())
    status = ModelDeploymentStatus(
        phase=state.phase,
        observed_generation=spec.generation,
        stable_revision=state.stable,
        candidate_revision=state.candidate,
        failed_revision=state.failed_revision,
        current_step=(len(spec.effective_steps()) if state.promoting else state.step_index)
        if state.candidate
        else None,
        step=f"{min(state.step_index + 1, steps)}/{steps}" if state.candidate and steps else None,
        step_started_at=state.step_started_at,
        rollout_started_at=state.rollout_started_at,
        weights=_revision_weights(state),
        weights_summary=weights_summary({k: v for k, v in state.desired_weights.items() if v > 0}),
        analysis=_analysis_status(state),
        revisions=_revision_records(state, spec, previous, model_uri, model_version, template),
        conditions=[*conditions, _traffic_verified(state, spec, verified, now)],
        message=state.message or None,
        learning=previous.learning if previous else None,
    )
    return status.model_dump(mode="json", by_alias=True, exclude_none=True)
