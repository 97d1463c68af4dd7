"""The snapshot canary of ``spec.learning.promotion: Canary`` (pure): a new snapshot is served first by
the candidate-snapshot Deployment to a share of traffic and promoted to the stable-snapshot
Deployment by the same step machine and analysis as a model canary (:func:`mlrollouts.rollout.decide`).

The machine speaks of revisions; here a revision is a snapshot, named ``snapshot-<n>``. Its target
is the newest snapshot newer than the stable one that is not ``Bad``; a candidate under analysis
stays the target until it is promoted or refused, however many snapshots are published meanwhile
(else a learner that publishes faster than a canary lasts would never promote anything). A refused
snapshot is marked ``Bad`` and never served by the stable Deployment.

State lives in ``status.learning.canary``; :func:`machine_state` and :func:`canary_status` convert
between it and the machine's :class:`~mlrollouts.rollout.RolloutState`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime

from mlrollouts.api.modeldeployment import (
    Analysis,
    LearningCanaryStatus,
    ModelDeployment,
    Phase,
    PinSource,
    Rollout,
    SnapshotRecord,
    SnapshotVerdict,
    Strategy,
)
from mlrollouts.core.events import Event
from mlrollouts.learning.decide import LearningDecision
from mlrollouts.learning.report import LearnerReport
from mlrollouts.rollout import (
    AnalysisRecord,
    AnalysisRun,
    Observation,
    RevisionHealth,
    RolloutSpec,
    RolloutState,
    analysis_due,
    decide,
)
from mlrollouts.rollout.resource import analysis_records, analysis_runs, rollout_spec

KEY_PREFIX = "snapshot-"
CANDIDATE_SUFFIX = "-candidate"
"""The candidate-snapshot Deployment of revision ``r`` is revision ``r-candidate`` (a pseudo-revision:
its pods, metrics and router variant carry that name, so the analysis templates compare it with
``r`` as they compare a model canary with its stable revision)."""
DROPPED_EVENTS = frozenset({"RevisionCreated", "RevisionDeleted", "Available"})
EVENT_REASONS = {
    "RolloutStarted": "SnapshotCanaryStarted",
    "RolloutRestarted": "SnapshotCanaryRestarted",
    "RolloutReverted": "SnapshotCanaryWithdrawn",
    "RolledBack": "SnapshotRefused",
    "Promoted": "SnapshotPromoted",
}
"""The machine's event reasons said of snapshots; the others get the prefix ``SnapshotCanary``."""
_KEY_TEXT = re.compile(r"(?:revision )?snapshot-(\d+)")


def snapshot_key(version: int) -> str:
    return f"{KEY_PREFIX}{version}"


def snapshot_of(key: str | None) -> int | None:
    if key is None or not key.startswith(KEY_PREFIX):
        return None
    return int(key[len(KEY_PREFIX) :])


def candidate_revision(stable_revision: str) -> str:
    """The pseudo-revision of the candidate-snapshot Deployment of a model revision."""
    return f"{stable_revision}{CANDIDATE_SUFFIX}"


def canary_analysis(md: ModelDeployment) -> Analysis | None:
    """The checks of a snapshot canary: ``spec.learning.canary.analysis``, else ``spec.rollout.analysis``."""
    learning = md.spec.learning
    canary = learning.canary if learning is not None else None
    if canary is not None and canary.analysis is not None:
        return canary.analysis
    return md.spec.rollout.analysis


def canary_rollout_spec(md: ModelDeployment, target: int, poll_interval: float = 1.0) -> RolloutSpec:
    """The machine's spec of a snapshot canary: the canary's steps and checks, target ``target``."""
    assert md.spec.learning is not None
    canary = md.spec.learning.canary_or_default
    rollout = Rollout(
        strategy=Strategy.CANARY,
        steps=canary.steps,
        analysis=canary_analysis(md),
        progress_deadline=canary.progress_deadline,
        scale_down_delay="0s",
        revision_history_limit=0,
    )
    shaped = md.model_copy(update={"spec": md.spec.model_copy(update={"rollout": rollout})})
    spec = rollout_spec(shaped, poll_interval=poll_interval)
    return replace(spec, target_revision=snapshot_key(target), replicas=canary.replicas)


# --- state --------------------------------------------------------------------------------------


def machine_state(status: LearningCanaryStatus) -> RolloutState:
    stable = snapshot_key(status.stable_snapshot) if status.stable_snapshot is not None else None
    candidate = snapshot_key(status.candidate_snapshot) if status.candidate_snapshot is not None else None
    weights: dict[str, int] = {}
    if stable is not None:
        weights[stable] = 100 - status.weight if candidate is not None else 100
    if candidate is not None:
        weights[candidate] = status.weight
    history: tuple[AnalysisRecord, ...] = ()
    if status.last_verdict is not None and status.last_analysis_at is not None:
        history = analysis_records(status.runs)[-1:]
    return RolloutState(
        phase=status.phase,
        message=status.message or "",
        stable=stable,
        candidate=candidate,
        failed_revision=snapshot_key(status.refused_snapshot)
        if status.refused_snapshot is not None
        else None,
        step_index=status.current_step or 0,
        step_started_at=status.step_started_at,
        rollout_started_at=status.started_at,
        weights_changed_at=status.weights_changed_at,
        desired_weights=weights,
        shadow=(candidate, status.shadow) if candidate is not None and status.shadow else None,
        paused_at=status.paused_at,
        pause_reason=status.pause_reason,
        promoting=status.promoting,
        last_analysis_at=status.last_analysis_at,
        failures=status.failures,
        consecutive_failures=status.consecutive_failures,
        inconclusive=status.inconclusive,
        history=history,
    )


def canary_status(state: RolloutState) -> LearningCanaryStatus:
    candidate = snapshot_of(state.candidate)
    last = state.history[-1] if state.history else None
    return LearningCanaryStatus(
        phase=state.phase,
        stable_snapshot=snapshot_of(state.stable),
        candidate_snapshot=candidate,
        refused_snapshot=snapshot_of(state.failed_revision),
        current_step=state.step_index if candidate is not None else None,
        weight=state.desired_weights.get(state.candidate, 0) if state.candidate is not None else 0,
        shadow=state.shadow[1] if state.shadow is not None else None,
        promoting=state.promoting,
        started_at=state.rollout_started_at,
        step_started_at=state.step_started_at,
        weights_changed_at=state.weights_changed_at,
        paused_at=state.paused_at,
        pause_reason=state.pause_reason,
        last_analysis_at=state.last_analysis_at,
        last_verdict=last.verdict if last is not None else None,
        last_verdict_step=last.step if last is not None else None,
        failures=state.failures,
        consecutive_failures=state.consecutive_failures,
        inconclusive=state.inconclusive,
        runs=analysis_runs(state.history[-1:]),
        message=snapshot_text(state.message) or None,
    )


# --- decision -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class CanaryObservation:
    """What one pass saw of a snapshot canary's world."""

    stable_ready: bool
    """The stable-snapshot Deployment (the model's stable revision) has its ready replicas."""
    candidate_ready: bool
    """The candidate-snapshot Deployment has its ready replicas."""
    candidate_pointer: int | None
    """The snapshot the learner points the candidate-snapshot replicas at."""
    split: tuple[int, int] | None
    """Percent of traffic the router confirms for (stable, candidate) Deployments; None: unconfirmed."""
    analysis: AnalysisRun | None = None
    hold: str | None = None
    """Why no snapshot canary may run now (a model rollout, a pin); None: it may."""


@dataclass(frozen=True)
class CanaryDecision:
    status: LearningCanaryStatus
    stable: int | None
    """The snapshot the stable-snapshot Deployment serves (held by a pin of source Canary)."""
    candidate: int | None
    """The snapshot the candidate-snapshot Deployment serves (None: no canary in flight)."""
    weight: int
    """Percent of traffic to the candidate-snapshot Deployment."""
    shadow: int | None
    """Percent of traffic mirrored to it."""
    refused: tuple[int, str] | None
    """The snapshot the analysis refused in this pass, and why."""
    events: tuple[Event, ...]


def canary_target(
    status: LearningCanaryStatus, records: Mapping[int, SnapshotRecord], lineage_start: int | None
) -> int | None:
    """The snapshot the machine works towards (see the module's docstring)."""
    if status.candidate_snapshot is not None:
        return status.candidate_snapshot
    stable = status.stable_snapshot
    eligible = [
        version
        for version, record in records.items()
        if record.verdict is not SnapshotVerdict.BAD
        and (stable is None or version > stable)
        and (lineage_start is None or version >= lineage_start)
    ]
    if eligible:
        return max(eligible)
    refused = status.refused_snapshot
    if refused is not None and stable is not None and refused > stable:
        return refused  # nothing newer yet: the canary stays refused, quietly
    return stable


def canary_due(md: ModelDeployment, status: LearningCanaryStatus, now: datetime) -> bool:
    """True when the snapshot canary's checks must run now."""
    if status.candidate_snapshot is None:
        return False
    spec = canary_rollout_spec(md, status.candidate_snapshot)
    return analysis_due(spec, machine_state(status), now)


def observation_of(status: LearningCanaryStatus, seen: CanaryObservation, target: int) -> Observation:
    """The machine's observation; before the first stable snapshot, the target is about to be it."""
    health: dict[str, RevisionHealth] = {}
    verified: dict[str, int] | None = None
    stable_snapshot = status.stable_snapshot if status.stable_snapshot is not None else target
    if stable_snapshot is not None:
        stable = snapshot_key(stable_snapshot)
        health[stable] = RevisionHealth(int(seen.stable_ready), 1)
        if seen.split is not None:
            verified = {stable: seen.split[0]}
    if status.candidate_snapshot is not None:
        candidate = snapshot_key(status.candidate_snapshot)
        served = seen.candidate_ready and seen.candidate_pointer == status.candidate_snapshot
        health[candidate] = RevisionHealth(int(served), 1)
        if verified is not None and seen.split is not None:
            verified[candidate] = seen.split[1]
    return Observation(revisions=health, verified_weights=verified, analysis=seen.analysis)


def decide_canary(
    md: ModelDeployment,
    previous: LearningCanaryStatus | None,
    records: Mapping[int, SnapshotRecord],
    serving: int | None,
    seen: CanaryObservation,
    now: datetime,
    *,
    lineage_start: int | None = None,
) -> CanaryDecision | None:
    """One tick of the snapshot canary; None before there is a snapshot to serve (``serving``: the
    snapshot the learner serves, the first stable one)."""
    status = previous or LearningCanaryStatus()
    if status.stable_snapshot is None:
        # the first stable snapshot is what serving serves, unless that belongs to an old lineage:
        # then the new lineage's first snapshot (its initial model is the spec's, rolled out already)
        old = serving is None or (lineage_start is not None and serving < lineage_start)
        target = lineage_start if old else serving
    else:
        target = canary_target(status, records, lineage_start)
    if target is None:
        return None
    if seen.hold is not None and status.stable_snapshot is not None:
        target = status.stable_snapshot
    spec = canary_rollout_spec(md, target)
    decision = decide(spec, machine_state(status), observation_of(status, seen, target), now)
    state = decision.state
    new = canary_status(state)
    if seen.hold is not None and new.candidate_snapshot is None:
        new = new.model_copy(update={"message": f"no snapshot canary: {seen.hold}"})
    refused = None
    if any(e.reason == "RolledBack" for e in decision.events) and status.candidate_snapshot is not None:
        refused = (status.candidate_snapshot, f"refused by the snapshot canary: {new.message}")
    events = tuple(
        Event(e.type, EVENT_REASONS.get(e.reason, f"SnapshotCanary{e.reason}"), snapshot_text(e.message))
        for e in decision.events
        if e.reason not in DROPPED_EVENTS
    )
    if seen.hold is not None and status.candidate_snapshot is not None and new.candidate_snapshot is None:
        withdrawn = f"snapshot canary of snapshot {status.candidate_snapshot} withdrawn: {seen.hold}"
        events = tuple(
            Event.normal("SnapshotCanaryWithdrawn", withdrawn) if e.reason == "SnapshotCanaryWithdrawn" else e
            for e in events
        )
    return CanaryDecision(
        status=new,
        stable=new.stable_snapshot,
        candidate=new.candidate_snapshot,
        weight=new.weight,
        shadow=new.shadow,
        refused=refused,
        events=events,
    )


def snapshot_text(message: str) -> str:
    """The machine's words about revisions ``snapshot-<n>``, said of snapshots."""
    return _KEY_TEXT.sub(r"snapshot \1", message).replace("rollout of snapshot", "canary of snapshot")


def refuse(records: Mapping[int, SnapshotRecord], version: int, reason: str) -> dict[int, SnapshotRecord]:
    """The records with snapshot ``version`` marked ``Bad`` (final) for ``reason``."""
    result = dict(records)
    record = result.get(version) or SnapshotRecord(version=version)
    result[version] = record.model_copy(update={"verdict": SnapshotVerdict.BAD, "reason": reason})
    return result


def is_idle(status: LearningCanaryStatus | None) -> bool:
    return status is None or (status.candidate_snapshot is None and status.phase is not Phase.PROGRESSING)


def with_canary(
    decision: LearningDecision, canary: CanaryDecision, report: LearnerReport
) -> LearningDecision:
    """The learning decision once the snapshot canary decided: a refused snapshot is ``Bad``, the
    canary's state is in the status, and its stable snapshot is pinned unless a person or the
    guard holds the pin."""
    status = decision.status
    records = {r.version: r for r in status.snapshots}
    if canary.refused is not None:
        records = refuse(records, *canary.refused)
    update: dict[str, object] = {
        "canary": canary.status,
        "snapshots": [records[v] for v in sorted(records)],
    }
    pin, pin_changed = decision.pin, decision.pin_changed
    if status.pinned_by in (None, PinSource.CANARY):
        pin = canary.stable
        pin_changed = pin != report.pinned
        update |= {
            "pinned": pin,
            "pinned_by": PinSource.CANARY if pin is not None else None,
            "serving_snapshot": pin if pin_changed else report.serving,
        }
    return replace(
        decision,
        status=status.model_copy(update=update),
        pin=pin,
        pin_changed=pin_changed,
        events=(*decision.events, *canary.events),
    )
