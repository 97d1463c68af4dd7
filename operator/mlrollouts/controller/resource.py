"""The one resource controller every kind runs on.

A kind supplies a :class:`KindController`: its API model, and one ``reconcile`` that observes,
decides (a pure function of its own package) and applies the children, returning an
:class:`Outcome`. Everything else is written once, here, for every kind:

- a refused resource (a spec the models reject, or one the kind refuses) is ``Degraded`` with the
  reason and the field in its status and one event per change, and no child is touched;
- the status is written with one merge patch, only when it changed;
- a handled ``mlrollouts.io/action`` annotation is removed;
- after an API error nothing is certain, so the apply cache is cleared;
- a pass does not decide from a body older than its own last status write (the watch may lag).

The kopf wiring (locks, the daemon that sleeps until the next pass is due) is in
:mod:`mlrollouts.controller.operator`; this module has no kopf in it, so tests drive passes directly.
"""

from __future__ import annotations

import abc
import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar

from pydantic import ValidationError

from mlrollouts.api import ResourceKind, format_validation_error
from mlrollouts.controller.children import Children, KubeApi, ResourceWriter
from mlrollouts.controller.config import OperatorConfig
from mlrollouts.controller.kube import KubeError
from mlrollouts.core.conditions import refused_status
from mlrollouts.core.events import Event
from mlrollouts.core.times import aware, parse_timestamp

Obj = dict[str, Any]

# How long a pass waits for the watch to deliver the status it wrote before deciding anyway.
STALE_BODY_TIMEOUT = 10.0


@dataclass
class Outcome:
    """What one pass did: the status it wants, its events, and when it wants to look again.

    ``status`` is the whole status to hold (``None``: leave it); ``decision`` is the kind's own
    decision, kept for tests and benchmarks."""

    status: Obj | None
    events: Sequence[Event] = ()
    requeue_after: float | None = None
    clear_action: bool = False
    decision: Any = None
    applied: int = 0
    wrote_status: bool = False


class Refused(Exception):
    """Raised by a kind when it will not act on a resource; the message names the field."""

    def __init__(self, message: str, reason: str = "InvalidSpec") -> None:
        super().__init__(message)
        self.message, self.reason = message, reason


@dataclass
class Pass:
    """What a kind's ``reconcile`` gets besides its resource."""

    kube: KubeApi
    config: OperatorConfig
    children: Children
    now: datetime
    memory: dict[str, Any]
    """Per-resource values kept between passes of this process (lost on restart, by design)."""


class KindController(abc.ABC):
    """One kind (its names and API model come from :mod:`mlrollouts.api`) and its pass."""

    kind: ClassVar[ResourceKind]

    @abc.abstractmethod
    async def reconcile(self, resource: Any, ctx: Pass) -> Outcome:
        """One pass over a valid resource. Raise :class:`Refused` to refuse it."""

    def progress_key(self, status: Obj) -> Any:
        """What identifies how far the resource has got, as read back from its status; a body whose
        key differs from the one last written is older than that write."""
        return status.get("phase")

    @abc.abstractmethod
    def record(self, namespace: str, name: str, outcome: Outcome) -> None:
        """Update the operator's own metrics after a pass."""

    @abc.abstractmethod
    def forget(self, namespace: str, name: str) -> None:
        """Drop the metrics of a deleted resource."""


@dataclass
class ResourceState:
    """What the operator process keeps per resource: one pass at a time, and when to run the next."""

    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    next_at: float | None = None
    applied: dict[str, str] = field(default_factory=dict)
    memory: dict[str, Any] = field(default_factory=dict)
    written: tuple[Any, float] | None = None
    """The progress key of the last status written, and until when to wait for it."""

    def stale(self, key: Any, clock: Callable[[], float] = time.monotonic) -> bool:
        return self.written is not None and key != self.written[0] and clock() < self.written[1]

    def schedule(self, requeue_after: float | None, clock: Callable[[], float] = time.monotonic) -> None:
        self.next_at = clock() + requeue_after if requeue_after is not None else None
        self.wake.set()  # the driver recomputes its sleep


async def run_pass(
    controller: KindController,
    body: Obj,
    kube: KubeApi,
    config: OperatorConfig,
    state: ResourceState,
    now: datetime | None = None,
) -> Outcome | None:
    """One pass over ``body`` (as kopf hands it over); ``None`` when the body is older than the
    last status this process wrote. The caller holds ``state.lock``."""
    status_before = dict(body.get("status") or {})
    if state.stale(controller.progress_key(status_before)):
        return None
    meta = body.get("metadata") or {}
    namespace, name = meta.get("namespace", ""), meta.get("name", "")
    writer = ResourceWriter(kube, controller.kind.api_version, controller.kind.kind, namespace, name)
    children = Children(kube, namespace, state.applied)
    now = now or datetime.now(UTC)
    try:
        outcome = await _reconcile(controller, body, Pass(kube, config, children, now, state.memory))
        if isinstance(outcome, Refused):
            return await _refuse(writer, meta, status_before, outcome, now)
        if outcome.status is not None:
            outcome.wrote_status = await writer.status(status_before, outcome.status)
        if outcome.clear_action:
            await writer.clear_action()
    except KubeError:
        children.forget()
        raise
    outcome.applied = children.applied
    if outcome.wrote_status and outcome.status is not None:
        state.written = (controller.progress_key(outcome.status), time.monotonic() + STALE_BODY_TIMEOUT)
    return outcome


async def _reconcile(controller: KindController, body: Obj, ctx: Pass) -> Outcome | Refused:
    try:
        resource = controller.kind.model.model_validate(body)
    except ValidationError as exc:
        return Refused(format_validation_error(exc))
    try:
        return await controller.reconcile(resource, ctx)
    except Refused as refused:
        return refused


async def _refuse(
    writer: ResourceWriter, meta: Obj, status_before: Obj, refused: Refused, now: datetime
) -> Outcome:
    """A refused resource is Degraded with the reason; the event goes out once per change."""
    generation = meta.get("generation") or 0
    status = refused_status(
        status_before, generation, refused.message, now, reason=refused.reason, phase="Degraded"
    )
    wrote = await writer.status(status_before, {**status_before, **status, "observedGeneration": generation})
    events = [Event("Warning", refused.reason, refused.message)] if wrote else []
    return Outcome(status=None, events=events, wrote_status=wrote)


def parse_instant(value: Any) -> datetime | None:
    """A timestamp as written or as read back (the API server may reformat it); naive means UTC."""
    if isinstance(value, datetime):
        return aware(value)
    return parse_timestamp(str(value)) if value else None
