"""The guard: which snapshots are good, which are bad, and which one serving falls back to.

The learner's prequential metric is test-then-train: each labelled sample is first predicted by the
model as it is, then learned. It reacts at once to bad labels (a burst of flipped labels looks like
a sudden loss of accuracy), before the model has learned much from them. The rules:

- a snapshot is judged by the metrics of its own manifest (the ``window`` samples it learned last):
  ``Unjudged`` before ``minSamples``, ``Bad`` when they breach, else ``Good``;
- a breach seen at ``S`` learned samples (in the learner's current metrics or in a snapshot's own)
  makes the guard active: serving falls back to the newest snapshot not ``Bad`` that learned at
  most ``S - window`` samples (none of the breached window), the *last good* snapshot;
- while the guard is active, every snapshot after the last good one that learned fewer than
  ``breachedAt + window`` samples is marked ``Bad``: it learned from the breached window, or was
  measured over it. ``Bad`` is final;
- the guard recovers once the metric no longer breaches and a snapshot that learned a full window
  after the last breach (``samples >= breachedAt + window``) is ``Good``: serving follows the
  newest snapshot again. A person who wants to stay on the old snapshot pins it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from mlrollouts.api.modeldeployment import LearningGuard, SnapshotRecord, SnapshotVerdict


def breach(guard: LearningGuard, metrics: Mapping[str, float]) -> str | None:
    """How ``metrics`` breach the guard (e.g. ``accuracy 0.41 < min 0.8``), or None."""
    value = metrics.get(guard.metric)
    if value is None:
        return None
    if guard.min is not None and value < guard.min:
        return f"{guard.metric} {value:.4g} < min {guard.min:g}"
    if guard.max is not None and value > guard.max:
        return f"{guard.metric} {value:.4g} > max {guard.max:g}"
    return None


def judge(guard: LearningGuard, samples: int, metrics: Mapping[str, float]) -> tuple[SnapshotVerdict, str]:
    """The verdict on a snapshot from its own metrics, and why."""
    if samples < max(guard.min_samples, 1) or guard.metric not in metrics:
        return SnapshotVerdict.UNJUDGED, ""
    found = breach(guard, metrics)
    if found:
        return SnapshotVerdict.BAD, f"its own metrics breach the guard: {found}"
    return SnapshotVerdict.GOOD, ""


@dataclass
class GuardState:
    """The guard's memory: the snapshots it judged (by version), the last good one, and the
    learned samples at the last breach (None: not breached)."""

    records: dict[int, SnapshotRecord] = field(default_factory=dict)
    last_good: int | None = None
    breached_at: int | None = None

    def samples_of(self, version: int | None) -> int:
        """Samples a snapshot learned; 0 for one no longer listed (older than every listed one)."""
        record = self.records.get(version) if version is not None else None
        return (record.samples or 0) if record is not None else 0

    def newest_usable(self, at_most_samples: int | None = None) -> int | None:
        """The newest snapshot not ``Bad`` (that learned at most ``at_most_samples``)."""
        usable = [
            r.version
            for r in self.records.values()
            if r.verdict is not SnapshotVerdict.BAD
            and (at_most_samples is None or (r.samples or 0) <= at_most_samples)
        ]
        return max(usable, default=None)

    def observe_breach(self, samples: int, window: int) -> None:
        """A breach over the ``window`` samples before ``samples``: fall back before that window."""
        cutoff = max(samples - window, 0)
        kept = self.last_good if self.samples_of(self.last_good) <= cutoff else None
        if self.breached_at is None or kept is None:
            fallback = self.newest_usable(cutoff)
            self.last_good = fallback if fallback is not None else kept
        self.breached_at = max(self.breached_at or 0, samples)

    def condemn(self, window: int, why: str) -> list[int]:
        """Mark ``Bad`` the snapshots the active guard cannot trust; returns their versions."""
        if self.breached_at is None:
            return []
        after = self.last_good if self.last_good is not None else -1
        trusted_from = self.breached_at + window
        condemned = []
        for version, record in self.records.items():
            samples = record.samples or 0
            if version > after and 0 < samples < trusted_from and record.verdict is not SnapshotVerdict.BAD:
                self.records[version] = replace_record(record, SnapshotVerdict.BAD, why)
                condemned.append(version)
        return sorted(condemned)

    def recovery(self, window: int) -> int | None:
        """The snapshot that proves the guard recovered (a full window after the breach, Good)."""
        if self.breached_at is None:
            return None
        after = self.last_good if self.last_good is not None else -1
        proofs = [
            r.version
            for r in self.records.values()
            if r.version > after
            and r.verdict is SnapshotVerdict.GOOD
            and (r.samples or 0) >= self.breached_at + window
        ]
        return min(proofs, default=None)


def replace_record(record: SnapshotRecord, verdict: SnapshotVerdict, reason: str) -> SnapshotRecord:
    return record.model_copy(update={"verdict": verdict, "reason": reason or None})


def bad_versions(records: Iterable[SnapshotRecord]) -> list[int]:
    return sorted(r.version for r in records if r.verdict is SnapshotVerdict.BAD)
