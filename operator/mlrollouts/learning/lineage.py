"""Snapshot lineages: a new initial model (a new ``spec.model`` revision) or new estimator parameters
make the learner start learning again from scratch, in a new lineage of snapshots numbered after the
old ones. What the guard and the snapshot canary knew of the old lineage says nothing of the new
one: a guard pin or a last good snapshot of the old lineage must never hold the new one back, and
the new lineage's snapshots are judged on their own.
"""

from __future__ import annotations

from mlrollouts.api.modeldeployment import LearningStatus, PinSource
from mlrollouts.core.events import Event
from mlrollouts.learning.report import LearnerReport

LINEAGE_ID_LENGTH = 16
"""Characters of the lineage id (a sha256) kept in the status."""


def short_lineage(lineage: str) -> str | None:
    return lineage[:LINEAGE_ID_LENGTH] or None


def lineage_start(report: LearnerReport, lineage: str) -> int | None:
    """The first listed snapshot of ``lineage`` (the learner's newest snapshot when none is listed)."""
    versions = [s.version for s in report.snapshots if short_lineage(s.lineage) == lineage]
    return min(versions, default=report.latest)


def follow_lineage(
    previous: LearningStatus | None, report: LearnerReport
) -> tuple[LearningStatus | None, list[Event]]:
    """The status to decide from: ``previous``, with the guard and canary memory of an old lineage
    dropped when the learner now learns a new one; and the event that says so."""
    current = short_lineage(report.lineage)
    if current is None:  # a learner that does not tell its lineage
        return previous, []
    if previous is None:
        return LearningStatus(lineage=current, lineage_start=lineage_start(report, current)), []
    if previous.lineage == current:
        if previous.lineage_start is None:
            return previous.model_copy(update={"lineage_start": lineage_start(report, current)}), []
        return previous, []
    start = lineage_start(report, current)
    if previous.lineage is None:  # a status written before lineages were tracked
        return previous.model_copy(update={"lineage": current, "lineage_start": start}), []
    held_by_person = previous.pinned_by is PinSource.USER
    reset = previous.model_copy(
        update={
            "lineage": current,
            "lineage_start": start,
            "last_good_snapshot": None,
            "breached_at_samples": None,
            "pinned": previous.pinned if held_by_person else None,
            "pinned_by": previous.pinned_by if held_by_person else None,
            "canary": None,
        }
    )
    event = Event.normal(
        "LineageStarted",
        f"a new snapshot lineage starts at snapshot {start} (a new initial model or new parameters); "
        "the guard and the snapshot canary judge it afresh",
    )
    return reset, [event]
