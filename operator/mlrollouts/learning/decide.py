"""One learning decision: from ``spec.learning``, the last ``status.learning``, the learner's report
and the time, the new ``status.learning``, the pin the learner must hold, the events and the
``LearningHealthy`` condition. Pure: the controller observes the learner and applies the pin.

The pin the learner must hold: ``spec.learning.pinnedSnapshot`` when set (a person's decision
wins), else the guard's last good snapshot while the guard is active (see
:mod:`mlrollouts.learning.guard`), else the snapshot the snapshot canary promoted (``promotion:
Canary``, see :mod:`mlrollouts.learning.canary`), else none (serving follows the newest snapshot).

The guard judges only the snapshots of the current lineage (:mod:`mlrollouts.learning.lineage`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from mlrollouts.api.modeldeployment import (
    Learning,
    LearningStatus,
    PinSource,
    SnapshotRecord,
    SnapshotVerdict,
)
from mlrollouts.core.conditions import Condition, ConditionStatus, condition
from mlrollouts.core.events import Event
from mlrollouts.learning.guard import GuardState, breach, judge
from mlrollouts.learning.lineage import follow_lineage
from mlrollouts.learning.report import LearnerReport, SnapshotInfo, Unreachable

LEARNING_HEALTHY = "LearningHealthy"
MAX_SNAPSHOT_RECORDS = 20
"""Snapshots listed in ``status.learning.snapshots`` (the newest); the learner's storage has all."""
DEFAULT_WINDOW = 500
"""The learner's prequential window when no guard sets one."""

Verdict = tuple[ConditionStatus, str, str]


@dataclass(frozen=True)
class LearningDecision:
    status: LearningStatus
    pin: int | None
    """The snapshot the learner must keep serving pinned to (None: follow the newest)."""
    pin_changed: bool
    """The learner holds another pin than ``pin``: ask it (``POST /v1/pin``)."""
    events: tuple[Event, ...]
    condition: Condition


def window_of(spec: Learning) -> int:
    return spec.guard.window if spec.guard is not None else DEFAULT_WINDOW


def record_of(info: SnapshotInfo, spec: Learning) -> SnapshotRecord:
    verdict, reason = judge(spec.guard, info.samples, info.metrics) if spec.guard else (None, "")
    return SnapshotRecord(
        version=info.version,
        parent=info.parent,
        created_at=info.created,
        samples=info.samples,
        metrics=dict(info.metrics),
        data_version=info.data_version,
        data_range=info.data_range,
        verdict=verdict,
        reason=reason or None,
    )


def merged_records(
    previous: Sequence[SnapshotRecord], listed: Iterable[SnapshotInfo], spec: Learning
) -> tuple[dict[int, SnapshotRecord], list[SnapshotRecord]]:
    """Every known snapshot by version (a verdict once given is kept), and those new to the status."""
    records = {r.version: r for r in previous}
    new = []
    for info in listed:
        if info.version not in records:
            records[info.version] = record_of(info, spec)
            new.append(records[info.version])
    return records, new


@dataclass(frozen=True)
class GuardOutcome:
    current: str | None = None
    """How the learner's current metrics breach the guard (None: they pass or are not judged yet)."""
    recovered_by: int | None = None
    """The snapshot that proved the guard recovered in this pass."""


def guard_step(
    spec: Learning, state: GuardState, report: LearnerReport, new: list[SnapshotRecord]
) -> GuardOutcome:
    """Feed the guard the breaches in new snapshots and in the current metrics."""
    guard = spec.guard
    if guard is None:
        return GuardOutcome()
    window = guard.window
    for record in sorted(new, key=lambda r: r.version):
        if record.verdict is SnapshotVerdict.BAD:
            state.observe_breach(record.samples or 0, window)
    current = breach(guard, report.metrics) if report.samples >= max(guard.min_samples, 1) else None
    if current:
        state.observe_breach(report.samples, window)
    if state.breached_at is None:
        state.last_good = state.newest_usable()
        return GuardOutcome(current)
    state.condemn(
        window,
        f"learned from, or was measured over, samples of the window the guard breached in "
        f"(up to {state.breached_at} samples)",
    )
    proof = state.recovery(window)
    if proof is None or current:
        return GuardOutcome(current)
    state.breached_at = None
    state.last_good = state.newest_usable()
    return GuardOutcome(current, recovered_by=proof)


def user_pin(
    spec: Learning, report: LearnerReport, records: Mapping[int, SnapshotRecord]
) -> tuple[int | None, str]:
    """``spec.learning.pinnedSnapshot``, or None and why it cannot be pinned."""
    wanted = spec.pinned_snapshot
    if wanted is None:
        return None, ""
    if wanted not in records and (report.latest is None or wanted > report.latest):
        newest = "none is" if report.latest is None else f"the newest is {report.latest}"
        return None, f"spec.learning.pinnedSnapshot: snapshot {wanted} is not published ({newest})"
    return wanted, ""


def published_event(new: list[SnapshotRecord], previous_latest: int | None) -> list[Event]:
    fresh = sorted(
        (r for r in new if previous_latest is None or r.version > previous_latest), key=lambda r: r.version
    )
    if not fresh:
        return []
    newest = fresh[-1]
    metrics = ", ".join(f"{k}={v:.4g}" for k, v in sorted(newest.metrics.items()))
    detail = f"{newest.samples} samples, data version {newest.data_version}" + (
        f", {metrics}" if metrics else ""
    )
    what = (
        f"snapshot {newest.version}" if len(fresh) == 1 else f"snapshots {fresh[0].version}..{newest.version}"
    )
    return [Event.normal("SnapshotPublished", f"{what} published ({detail})")]


def pin_events(
    pin: int | None, source: PinSource | None, report: LearnerReport, guard: GuardOutcome
) -> list[Event]:
    if pin == report.pinned:
        return []
    if pin is None:
        why = (
            f"the guard recovered: snapshot {guard.recovered_by} passes it a full window after the breach"
            if guard.recovered_by is not None
            else "no pin is asked for"
        )
        return [Event.normal("SnapshotUnpinned", f"serving follows the newest snapshot again ({why})")]
    if source is PinSource.CANARY:
        return []  # the snapshot canary's own events tell of its promotions
    if source is PinSource.USER:
        return [
            Event.normal(
                "SnapshotPinned", f"serving pinned to snapshot {pin} by spec.learning.pinnedSnapshot"
            )
        ]
    return [Event.warning("SnapshotPinned", f"serving rolled back to snapshot {pin}, the last good one")]


def breach_event(spec: Learning, state: GuardState, guard: GuardOutcome, was_breached: bool) -> list[Event]:
    if was_breached or state.breached_at is None or spec.guard is None:
        return []
    seen = guard.current or "a snapshot's own metrics breach it"
    target = (
        f"snapshot {state.last_good}" if state.last_good is not None else "no good snapshot (none is left)"
    )
    return [
        Event.warning(
            "GuardBreached",
            f"{seen} over the last {spec.guard.window} samples (at {state.breached_at} samples); "
            f"falling back to {target}",
        )
    ]


def healthy_verdict(
    spec: Learning,
    report: LearnerReport,
    state: GuardState,
    guard: GuardOutcome,
    pin: int | None,
    pin_problem: str,
    source: PinSource | None = None,
) -> Verdict:
    """The ``LearningHealthy`` condition of a learner that answered."""
    if not report.storage_available:
        return (
            ConditionStatus.FALSE,
            "StorageUnavailable",
            (
                f"the learner cannot reach its storage ({report.storage_error}); it retries, serving stays on "
                f"snapshot {report.serving}"
            ),
        )
    if state.breached_at is not None:
        what = guard.current or "a snapshot's own metrics breached it"
        where = f"serving snapshot {pin}" if pin is not None else "no good snapshot to fall back to"
        return (
            ConditionStatus.FALSE,
            "GuardBreached",
            (
                f"guard breached: {what} (last at {state.breached_at} samples); {where} until a snapshot "
                f"that learned {window_of(spec)} samples after the breach passes the guard"
            ),
        )
    if pin_problem:
        return ConditionStatus.FALSE, "PinRefused", pin_problem
    summary = ", ".join(f"{k}={v:.4g}" for k, v in sorted(report.metrics.items())) or "no metrics yet"
    if pin is not None and source is not PinSource.CANARY:
        return (
            ConditionStatus.TRUE,
            "Pinned",
            (
                f"serving pinned to snapshot {pin} by spec.learning.pinnedSnapshot; learning goes on "
                f"(latest {report.latest}, {report.samples} samples, {summary})"
            ),
        )
    return (
        ConditionStatus.TRUE,
        "Learning",
        (
            f"{report.samples} samples learned, serving snapshot {report.serving} ({summary} over the last "
            f"{window_of(spec)})"
        ),
    )


def unreachable_verdict(previous: LearningStatus | None, report: LearnerReport | Unreachable) -> Verdict:
    if isinstance(report, LearnerReport):
        return (
            ConditionStatus.UNKNOWN,
            "LearnerNotReady",
            "the learner is resuming from its last snapshot and the data log",
        )
    reason = report.reason
    if previous is None or previous.latest_snapshot is None:
        return ConditionStatus.UNKNOWN, "LearnerStarting", f"waiting for the learner: {reason}"
    return (
        ConditionStatus.FALSE,
        "LearnerUnavailable",
        (f"the learner does not answer ({reason}); serving stays on snapshot {previous.serving_snapshot}"),
    )


def chosen_pin(
    wanted: int | None, guard_pin: int | None, canary_stable: int | None
) -> tuple[int | None, PinSource | None]:
    """The pin the learner must hold and who holds it: a person, else the guard, else the canary."""
    if wanted is not None:
        return wanted, PinSource.USER
    if guard_pin is not None:
        return guard_pin, PinSource.GUARD
    if canary_stable is not None:
        return canary_stable, PinSource.CANARY
    return None, None


def newest_records(records: Mapping[int, SnapshotRecord]) -> list[SnapshotRecord]:
    return [records[v] for v in sorted(records)[-MAX_SNAPSHOT_RECORDS:]]


def decide_learning(
    spec: Learning,
    previous: LearningStatus | None,
    report: LearnerReport | Unreachable,
    now: datetime,
    *,
    conditions: Sequence[Condition] = (),
    generation: int | None = None,
    canary_stable: int | None = None,
) -> LearningDecision:
    """The learning step of one pass (see the module's docstring); ``canary_stable`` is the snapshot
    the snapshot canary serves as stable (``promotion: Canary``)."""
    if isinstance(report, Unreachable) or not report.ready:
        return _hold(previous, report, now, conditions, generation)
    followed, lineage_events = follow_lineage(previous, report)
    before = followed or LearningStatus()
    records, new = merged_records(before.snapshots, report.snapshots, spec)
    start = before.lineage_start
    state = GuardState(
        {v: r for v, r in records.items() if start is None or v >= start},
        before.last_good_snapshot,
        before.breached_at_samples,
    )
    guard = guard_step(spec, state, report, [r for r in new if start is None or r.version >= start])
    records.update(state.records)
    wanted, pin_problem = user_pin(spec, report, records)
    guard_pin = state.last_good if state.breached_at is not None else None
    pin, source = chosen_pin(wanted, guard_pin, canary_stable)
    events = [
        *lineage_events,
        *published_event(new, before.latest_snapshot),
        *breach_event(spec, state, guard, before.breached_at_samples is not None),
        *pin_events(pin, source, report, guard),
    ]
    verdict = healthy_verdict(spec, report, state, guard, pin, pin_problem, source)
    status = LearningStatus(
        latest_snapshot=report.latest,
        serving_snapshot=(pin if pin is not None else report.latest)
        if pin != report.pinned
        else report.serving,
        last_good_snapshot=state.last_good,
        pinned=pin,
        pinned_by=source,
        samples=report.samples,
        metrics=dict(report.metrics),
        data_version=report.data_version,
        breached_at_samples=state.breached_at,
        snapshots=newest_records(records),
        message=verdict[2],
        lineage=before.lineage,
        lineage_start=before.lineage_start,
        canary=before.canary,
    )
    return LearningDecision(
        status=status,
        pin=pin,
        pin_changed=pin != report.pinned,
        events=tuple(events),
        condition=_condition(verdict, conditions, now, generation),
    )


def _hold(
    previous: LearningStatus | None,
    report: LearnerReport | Unreachable,
    now: datetime,
    conditions: Sequence[Condition],
    generation: int | None,
) -> LearningDecision:
    """The learner cannot tell where it is (down, or resuming): keep what the status says and ask
    for no pin change."""
    verdict = unreachable_verdict(previous, report)
    old = next((c for c in conditions if c.type == LEARNING_HEALTHY), None)
    events = []
    if verdict[1] == "LearnerUnavailable" and (old is None or old.reason != "LearnerUnavailable"):
        events.append(Event.warning("LearnerUnavailable", verdict[2]))
    status = (previous or LearningStatus()).model_copy(update={"message": verdict[2]})
    pin = previous.pinned if previous else None
    return LearningDecision(
        status, pin, False, tuple(events), _condition(verdict, conditions, now, generation)
    )


def _condition(
    verdict: Verdict, conditions: Sequence[Condition], now: datetime, generation: int | None
) -> Condition:
    status, reason, message = verdict
    return condition(
        LEARNING_HEALTHY, status, reason, message, previous=conditions, now=now, generation=generation
    )
