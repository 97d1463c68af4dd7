"""The one resource controller every kind runs on.

A kind supplies a :class:`KindController`: its API model, and one ``reconcile`` that observes,
decides (a pure function of its own package) and applies the children, returning an
:class:`Outcome`. Everything else is written once, here, for every kind:

- a refused resource (a spec the models reject, or one the kind refuses) is ``Degraded`` with the
  reason and the field in its status and one event per change, and no child is touched;
- the status is written with one merge patch, only when it changed;
- a handled ``mlrollouts.io/action`` annotation is removed;
- after an API error nothing is certain, so the apply cache is cleared;
- a request the API server forbids (403: the operator's RBAC lacks a right, e.g. a traffic provider
  the Helm chart did not grant) makes the resource ``Degraded`` with ``Ready`` False, reason
  ``Forbidden`` and the server's words, one event per change, and is retried every
  ``FORBIDDEN_RETRY_DELAY`` seconds: once the right is granted the next pass goes on by itself;
- a pass does not decide from a body older than its own last status write (the watch may lag).

The kopf wiring (locks, the daemon that sleeps until the next pass is due) is in
:mod:`mlrollouts.controller.operator`; this module has no kopf in it, so tests drive passes directly.
"""

from __future__ import annotations

import abc
import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar

from pydantic import ValidationError

from mlrollouts.api import ResourceKind, format_validation_error
from mlrollouts.controller import metrics
from mlrollouts.controller.children import Children, KubeApi, ResourceWriter
from mlrollouts.controller.config import OperatorConfig
from mlrollouts.controller.kube import KubeError
from mlrollouts.core.conditions import DEGRADED, READY, refused_status
from mlrollouts.core.events import Event
from mlrollouts.core.names import ACTION_ANNOTATION, ACTIONS_HANDLED_ANNOTATION
from mlrollouts.core.times import aware, parse_timestamp

Obj = dict[str, Any]

log = logging.getLogger("mlrollouts.controller")

# How long a pass waits for the watch to deliver the status it wrote before deciding anyway.
STALE_BODY_TIMEOUT = 10.0
# When a pass that failed on an API error runs again: soon after a conflict or throttling (the
# client has already waited as the server asked), later after other errors.
API_RETRY_DELAY = 1.0
API_ERROR_DELAY = 5.0
# After a 403: RBAC changes when someone grants the right, not in a second.
FORBIDDEN_RETRY_DELAY = 15.0
FORBIDDEN = "Forbidden"


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
    writer: ResourceWriter
    """The writer of the resource's own status, shared by every write of the pass: the removal of
    an action holds the version its last status write left."""
    action: str | None = None
    """The ``mlrollouts.io/action`` annotation this pass may act on (None: none, or one already acted on)."""
    action_number: int = 1
    """The number ``action`` gets in the status's record once acted on (see :data:`HANDLED_ACTION`)."""
    held_conditions: Sequence[Obj] = ()
    """``Ready`` and ``Degraded`` as the last pass left them when a request was forbidden: a status
    written before the end of this pass keeps them, so they change only when a pass gets through."""
    intent: Obj | None = None
    """The status the kind wrote before the end of the pass (see :func:`intent_status`)."""
    committed: list[Event] = field(default_factory=list)
    """Events of changes that write has made durable: they are posted even when a later write of
    the pass fails, since the next pass finds those changes done."""


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
    last_pass_at: float = 0.0
    """When the last pass started (monotonic clock)."""

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
    writer = ResourceWriter(
        kube, controller.kind.api_version, controller.kind.kind, namespace, name, meta.get("resourceVersion")
    )
    children = Children(kube, namespace, state.applied)
    now = now or datetime.now(UTC)
    action, body = pending_action(body, status_before)
    number = _handled_count(meta) + 1
    ctx = Pass(kube, config, children, now, state.memory, writer, action, action_number=number)
    if _was_forbidden(status_before):
        ctx.held_conditions = [c for c in status_before["conditions"] if c.get("type") in _FORBIDDEN_TYPES]
    try:
        outcome = await _reconcile(controller, body, ctx)
        if isinstance(outcome, Refused):
            refused = await _refuse(writer, meta, status_before, outcome, now)
            if refused.status is not None:  # a lagging watch must not refuse (and post) again
                state.written = (
                    controller.progress_key(refused.status),
                    time.monotonic() + STALE_BODY_TIMEOUT,
                )
            return refused
        handled = _annotation(meta)
        if handled is not None and (action is None or outcome.clear_action):
            outcome.clear_action = True
            outcome.status = {**(status_before if outcome.status is None else outcome.status)}
            outcome.status[HANDLED_ACTION] = _record(handled, number)
        if outcome.status is not None:
            outcome.wrote_status = await writer.status(status_before, outcome.status)
        if outcome.clear_action:
            await writer.clear_action(number)
    except KubeError as exc:
        children.forget()
        # the driver must try again even when no event comes: a pass that failed on its first
        # write (or a kopf handler whose own progress patch failed too) would else wait forever
        retry = {403: FORBIDDEN_RETRY_DELAY, 409: API_RETRY_DELAY, 429: API_RETRY_DELAY}.get(
            exc.status, API_ERROR_DELAY
        )
        state.schedule(retry)
        if exc.status == 403:
            held = ctx.intent if ctx.committed and ctx.intent is not None else status_before
            forbidden = await _forbidden(writer, meta, held, exc, now)
            if forbidden is not None:
                state.written = (controller.progress_key(forbidden), time.monotonic() + STALE_BODY_TIMEOUT)
                metrics.RECONCILE_ERRORS.labels("api").inc()
                events = [*ctx.committed]
                if not _was_forbidden(status_before):  # one event when it starts, not one per retry
                    events.append(Event("Warning", FORBIDDEN, forbidden["conditions"][-1]["message"]))
                return Outcome(
                    status=forbidden, events=events, requeue_after=retry, wrote_status=forbidden != held
                )
        if not ctx.committed or ctx.intent is None:
            raise
        # like a finished pass: the next one must not decide from a body older than the intent
        state.written = (controller.progress_key(ctx.intent), time.monotonic() + STALE_BODY_TIMEOUT)
        log.warning(
            "%s/%s: pass failed after its status was written, retrying in %ss: %s",
            namespace,
            name,
            retry,
            exc,
        )
        metrics.RECONCILE_ERRORS.labels("api").inc()
        return Outcome(status=None, events=list(ctx.committed), requeue_after=retry)
    outcome.applied = children.applied
    if outcome.wrote_status and outcome.status is not None:
        state.written = (controller.progress_key(outcome.status), time.monotonic() + STALE_BODY_TIMEOUT)
    return outcome


HANDLED_ACTION = "handledAction"
"""Status field: the action annotation whose effects the status holds, ``{"action": value,
"number": n}``, written with those effects (the status write is the commit). The operator removes
the annotation in one patch with ``ACTIONS_HANDLED_ANNOTATION`` set to ``n``. A pass that finds the
annotation with the record ``n`` = that count + 1 knows the removal has not happened (a restart, a
failed patch) and only removes it; any other annotation is a new request, even one of the same
value, so a request is never acted on twice and never taken for the one before it."""


def _annotation(meta: Obj) -> str | None:
    value = (meta.get("annotations") or {}).get(ACTION_ANNOTATION)
    return None if value is None else str(value)


def _handled_count(meta: Obj) -> int:
    value = (meta.get("annotations") or {}).get(ACTIONS_HANDLED_ANNOTATION)
    try:
        return max(int(value), 0) if value is not None else 0
    except (TypeError, ValueError):
        return 0


def _record(action: str, number: int) -> Obj:
    return {"action": action, "number": number}


def _acted_on(meta: Obj, status: Obj) -> bool:
    """Whether the action annotation on ``meta`` is the one whose effects ``status`` holds."""
    action = _annotation(meta)
    return action is not None and status.get(HANDLED_ACTION) == _record(action, _handled_count(meta) + 1)


def pending_action(body: Obj, status: Obj) -> tuple[str | None, Obj]:
    """The action annotation still to act on, and the body the kind is to see: without an action
    whose effects ``status`` already holds."""
    meta = body.get("metadata") or {}
    if not _acted_on(meta, status):
        return _annotation(meta), body
    annotations = {k: v for k, v in (meta.get("annotations") or {}).items() if k != ACTION_ANNOTATION}
    return None, {**body, "metadata": {**meta, "annotations": annotations}}


def action_waiting(body: Obj) -> bool:
    """Whether ``body`` still carries an action annotation: one to act on, or one acted on whose
    removal failed. Either needs a pass."""
    return _annotation(body.get("metadata") or {}) is not None


def intent_status(status: Obj, ctx: Pass, acted: bool) -> Obj:
    """``status`` as a kind writes it before the end of its pass, marked when the pass ``acted``
    on ``ctx.action``; remembered in ``ctx.intent``. The kind adds the events of the decision to
    ``ctx.committed`` once the write succeeded. After a forbidden request ``Ready`` and ``Degraded``
    stay as they were: the pass has not got through yet."""
    acted = acted and ctx.action is not None
    if ctx.held_conditions:
        kept = [c for c in status.get("conditions") or [] if c.get("type") not in _FORBIDDEN_TYPES]
        status = {**status, "conditions": [*kept, *ctx.held_conditions]}
    ctx.intent = {**status, HANDLED_ACTION: _record(str(ctx.action), ctx.action_number)} if acted else status
    return ctx.intent


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
    written = {**status_before, **status, "observedGeneration": generation}
    wrote = await writer.status(status_before, written)
    events = [Event("Warning", refused.reason, refused.message)] if wrote else []
    return Outcome(status=written if wrote else None, events=events, wrote_status=wrote)


_FORBIDDEN_TYPES = (READY, DEGRADED)


def _was_forbidden(status: Obj) -> bool:
    return any(
        c.get("type") == DEGRADED and c.get("reason") == FORBIDDEN and c.get("status") == "True"
        for c in status.get("conditions") or []
    )


async def _forbidden(
    writer: ResourceWriter, meta: Obj, held: Obj, exc: KubeError, now: datetime
) -> Obj | None:
    """``held`` (the status the API server has) with ``Ready`` False and ``Degraded`` True for a
    request the server forbade; written when it changed. The phase and message stay the kind's own:
    its next pass after the right is granted sets every condition again. None when even the status
    write failed (the caller raises the first error)."""
    call = exc.call or "a request"
    message = (
        f"the API server forbids the operator's {call}: {exc.message}; grant the right to the "
        "operator's ServiceAccount (Helm chart values: providers.gatewayAPI / providers.ingressNginx "
        f"for HTTPRoutes and Ingresses); retried every {FORBIDDEN_RETRY_DELAY:.0f}s"
    )
    generation = meta.get("generation") or 0
    changes = refused_status(held, generation, message, now, reason=FORBIDDEN, phase=DEGRADED)
    status = {**held, "conditions": changes["conditions"]}
    try:
        await writer.status(held, status)
    except KubeError as failed:
        log.warning("%s: could not write the Forbidden condition: %s", meta.get("name"), failed)
        return None
    return status


def parse_instant(value: Any) -> datetime | None:
    """A timestamp as written or as read back (the API server may reformat it); naive means UTC."""
    if isinstance(value, datetime):
        return aware(value)
    return parse_timestamp(str(value)) if value else None
