"""What the operator learns of a learner: its ``GET /v1/status`` document, parsed and checked.

The learner is a separate process that may be older or newer than the operator, so the parser
reads only the fields the decisions need, ignores the others, and names the field when one it
needs is malformed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from mlrollouts.core.times import parse_timestamp


class ReportError(ValueError):
    """The learner's status document is not what the operator reads; the message names the field."""


@dataclass(frozen=True)
class SnapshotInfo:
    """One published snapshot as its signed manifest describes it."""

    version: int
    parent: int | None = None
    created: datetime | None = None
    samples: int = 0
    metrics: Mapping[str, float] = field(default_factory=dict)
    data_version: int | None = None
    data_seq_start: int | None = None
    data_seq_end: int | None = None
    lineage: str = ""
    """Id of the lineage it belongs to (its initial model and parameters)."""

    @property
    def data_range(self) -> str | None:
        """The half-open range of production-data log rows (by seq) it learned from."""
        if self.data_seq_start is None or self.data_seq_end is None:
            return None
        return f"[{self.data_seq_start}, {self.data_seq_end})"


@dataclass(frozen=True)
class LearnerReport:
    """The learner's state at one moment."""

    ready: bool
    samples: int
    metrics: Mapping[str, float]
    latest: int | None
    serving: int | None
    pinned: int | None
    snapshots: tuple[SnapshotInfo, ...] = ()
    data_version: int | None = None
    storage_available: bool = True
    storage_error: str = ""
    candidate: int | None = None
    """The snapshot the candidate-snapshot replicas of a snapshot canary are pointed at."""
    lineage: str = ""
    """Id of the lineage the learner learns now; a new one starts with a new initial model."""


@dataclass(frozen=True)
class Unreachable:
    """The learner did not answer (or answered something unreadable)."""

    reason: str


def _integer(document: Mapping[str, Any], name: str, where: str, *, required: bool = False) -> int | None:
    value = document.get(name)
    if value is None and not required:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ReportError(f"{where}{name}: expected a non-negative integer, got {value!r}")
    return value


def _metrics(value: Any, where: str) -> dict[str, float]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ReportError(f"{where}metrics: expected an object, got {type(value).__name__}")
    return {
        str(k): float(v)
        for k, v in value.items()
        if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
    }


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def parse_snapshot(document: Any, index: int) -> SnapshotInfo:
    where = f"snapshots[{index}]."
    if not isinstance(document, Mapping):
        raise ReportError(f"snapshots[{index}]: expected an object")
    return SnapshotInfo(
        version=_integer(document, "version", where, required=True) or 0,
        parent=_integer(document, "parent", where),
        created=parse_timestamp(document.get("created")),
        samples=_integer(document, "samples", where) or 0,
        metrics=_metrics(document.get("metrics"), where),
        data_version=_integer(document, "data_version", where),
        data_seq_start=_integer(document, "data_seq_start", where),
        data_seq_end=_integer(document, "data_seq_end", where),
        lineage=_text(document.get("base_sha256")),
    )


def parse_report(document: Any) -> LearnerReport:
    """A :class:`LearnerReport` from the learner's status JSON; ReportError names a malformed field."""
    if not isinstance(document, Mapping):
        raise ReportError("the learner's status is not a JSON object")
    listed = document.get("snapshots") or []
    if not isinstance(listed, list):
        raise ReportError("snapshots: expected a list")
    storage = document.get("storage")
    storage = storage if isinstance(storage, Mapping) else {}
    snapshots = sorted((parse_snapshot(s, i) for i, s in enumerate(listed)), key=lambda s: s.version)
    return LearnerReport(
        ready=bool(document.get("ready")),
        samples=_integer(document, "samples", "") or 0,
        metrics=_metrics(document.get("metrics"), ""),
        latest=_integer(document, "latest", ""),
        serving=_integer(document, "serving", ""),
        pinned=_integer(document, "pinned", ""),
        snapshots=tuple(snapshots),
        data_version=_integer(document, "data_version", ""),
        storage_available=bool(storage.get("available", True)),
        storage_error=str(storage.get("last_error") or ""),
        candidate=_integer(document, "candidate", ""),
        lineage=_text(document.get("lineage")),
    )
