"""Status conditions with the Kubernetes API conventions, and the one rule for changing them.

A condition's ``lastTransitionTime`` is the time its ``status`` last changed: setting a condition
to the status it already has keeps the old time, whatever happens to its reason and message.
``observedGeneration`` is the spec generation the condition speaks about.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, TypeVar

from pydantic import ConfigDict
from pydantic.alias_generators import to_camel

T = TypeVar("T")

READY = "Ready"
PROGRESSING = "Progressing"
DEGRADED = "Degraded"

INVALID_SPEC = "InvalidSpec"


# No docstring on purpose: the enum is part of the status schema, and a docstring would become
# its description in the generated CRDs.
class ConditionStatus(StrEnum):
    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


@dataclass(frozen=True)
class Condition:
    """A condition following the Kubernetes API conventions."""

    # camelCase in the resource status; fields a newer operator may add are ignored when read back
    __pydantic_config__ = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")

    type: str
    status: ConditionStatus
    reason: str = ""
    message: str = ""
    last_transition_time: datetime | None = None
    observed_generation: int | None = None


def transition_time(previous_status: str | None, previous_time: T | None, status: str, now: T) -> T:
    """The rule of ``lastTransitionTime``: it moves to ``now`` only when the status changes (or was
    never recorded)."""
    return previous_time if previous_status == status and previous_time else now


def condition(
    type_: str,
    status: ConditionStatus,
    reason: str,
    message: str,
    *,
    previous: Iterable[Condition],
    now: datetime,
    generation: int | None,
) -> Condition:
    """The condition ``type_`` as of ``now``, its transition time carried over from the previous
    condition of that type by :func:`transition_time`."""
    old = next((c for c in previous if c.type == type_), None)
    since = transition_time(
        old.status if old else None, old.last_transition_time if old else None, status, now
    )
    return Condition(type_, status, reason, message, since, generation)


def set_condition(
    conditions: Sequence[Condition],
    type_: str,
    status: ConditionStatus,
    reason: str,
    message: str,
    *,
    now: datetime,
    generation: int | None,
) -> list[Condition]:
    """``conditions`` with ``type_`` set (see :func:`condition`); it moves to the end of the list,
    the other conditions are kept as they are."""
    new = condition(type_, status, reason, message, previous=conditions, now=now, generation=generation)
    return [c for c in conditions if c.type != type_] + [new]


def refused_status(
    status_before: Mapping[str, Any],
    generation: int,
    message: str,
    now: datetime,
    reason: str = INVALID_SPEC,
    phase: str | None = None,
) -> dict[str, Any]:
    """The status of a resource the operator will not act on (bad spec, refused image).

    ``Ready`` turns False with ``reason`` and, with ``phase="Degraded"``, ``Degraded`` turns True.
    The status as read is JSON that may not even parse (the spec did not), so the other conditions
    are kept exactly as they are. The result is a merge patch of ``status``: what it leaves out
    (revisions, weights, winner) keeps describing the children, which are not touched.
    """
    utc = now.astimezone(UTC) if now.tzinfo is not None else now
    stamp = utc.strftime("%Y-%m-%dT%H:%M:%SZ")  # whole seconds, as the API server stamps times
    changes = {READY: ConditionStatus.FALSE}
    if phase == DEGRADED:
        changes[DEGRADED] = ConditionStatus.TRUE
    conditions = list(status_before.get("conditions") or [])
    for type_, status in changes.items():
        old: Mapping[str, Any] = next((c for c in conditions if c.get("type") == type_), {})
        entry = {
            "type": type_,
            "status": status.value,
            "reason": reason,
            "message": message,
            "lastTransitionTime": transition_time(
                old.get("status"), old.get("lastTransitionTime"), status, stamp
            ),
            "observedGeneration": generation,
        }
        conditions = [c for c in conditions if c.get("type") != type_] + [entry]
    prefix = "invalid spec" if reason == INVALID_SPEC else reason
    result: dict[str, Any] = {"message": f"{prefix}: {message}", "conditions": conditions}
    if phase is not None:
        result["phase"] = phase
    return result
