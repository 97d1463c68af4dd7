"""Notifications: phase changes, promotions, rollbacks and experiment conclusions sent to HTTP sinks.

Two payloads, chosen per sink:

- ``CloudEvents``: a CloudEvents 1.0 event in structured mode (``application/cloudevents+json``:
  ``specversion``, ``id``, ``source``, ``type``, ``subject``, ``time``, ``datacontenttype``, ``data``);
- ``Slack``: ``{"text": ...}``, which Slack incoming webhooks and most chat tools take.

Sinks come from ``MLROLLOUTS_NOTIFICATIONS`` (a JSON list, set by the chart). Delivery never blocks a
reconcile pass: each sink has its own bounded queue and worker, a failed delivery is retried a few
times with backoff, and what cannot be delivered is counted in ``mlrollouts_notifications_total``
with ``outcome="dropped"`` (retries spent) or ``"overflow"`` (queue full), then forgotten.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

import httpx
from prometheus_client import Counter

from mlrollouts.controller.metrics import REGISTRY
from mlrollouts.core.events import Event
from mlrollouts.core.names import GROUP

NOTIFICATIONS_ENV = "MLROLLOUTS_NOTIFICATIONS"
NOTIFIED_REASONS = frozenset({"Promoted", "RolledBack", "Concluded", "Stopped"})
"""Event reasons worth a notification besides a phase change: promotions, rollbacks, and an
experiment's end (with a winner, or stopped without one)."""
PHASE_CHANGED = "PhaseChanged"
CLOUDEVENTS_CONTENT_TYPE = "application/cloudevents+json"
QUEUE_SIZE = 100
ATTEMPTS = 4
FIRST_BACKOFF = 0.5

NOTIFICATIONS = Counter(
    "mlrollouts_notifications",
    "Notifications by sink and outcome (delivered, dropped after retries, overflow of a full queue)",
    ["sink", "outcome"],
    registry=REGISTRY,
)

log = logging.getLogger("mlrollouts.notifications")


class SinkFormat(StrEnum):
    CLOUDEVENTS = "CloudEvents"
    SLACK = "Slack"


@dataclass(frozen=True)
class NotificationSink:
    name: str
    url: str
    format: SinkFormat = SinkFormat.CLOUDEVENTS
    reasons: frozenset[str] = frozenset()
    """Only these reasons (``PhaseChanged``, ``Promoted``, ...); empty: every notification."""
    timeout: float = 5.0

    def wants(self, reason: str) -> bool:
        return not self.reasons or reason in self.reasons


@dataclass(frozen=True)
class Notification:
    """Something a person watching the resource wants to hear about."""

    kind: str
    namespace: str
    name: str
    reason: str
    message: str
    time: datetime
    phase: str | None = None
    previous_phase: str | None = None
    details: Mapping[str, Any] = field(default_factory=dict)
    """Revisions (ModelDeployment) or the winner (Experiment): what the reason is about."""


SINK_FIELDS = {"name", "url", "format", "reasons", "timeout"}


def parse_sinks(text: str | None, source: str = NOTIFICATIONS_ENV) -> tuple[NotificationSink, ...]:
    """The sinks of ``MLROLLOUTS_NOTIFICATIONS``; a bad entry raises ``ValueError`` naming its field."""
    if not text or not text.strip():
        return ()
    try:
        entries = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{source}: not JSON: {exc}") from None
    if not isinstance(entries, list):
        raise ValueError(f"{source}: must be a JSON list of sinks")
    sinks = tuple(_sink(entry, f"{source}[{i}]") for i, entry in enumerate(entries))
    names = [s.name for s in sinks]
    if len(set(names)) != len(names):
        raise ValueError(f"{source}: sink names must be unique, got {names}")
    return sinks


def _sink(entry: Any, where: str) -> NotificationSink:
    if not isinstance(entry, dict):
        raise ValueError(f"{where}: must be an object with name and url")
    if unknown := set(entry) - SINK_FIELDS:
        raise ValueError(
            f"{where}.{sorted(unknown)[0]}: unknown field (allowed: {', '.join(sorted(SINK_FIELDS))})"
        )
    name, url = entry.get("name"), entry.get("url")
    if not isinstance(name, str) or not name:
        raise ValueError(f"{where}.name: a non-empty string is required")
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise ValueError(f"{where}.url: an http:// or https:// URL is required")
    try:
        sink_format = SinkFormat(entry.get("format", SinkFormat.CLOUDEVENTS))
    except ValueError:
        raise ValueError(f"{where}.format: one of {', '.join(SinkFormat)}") from None
    reasons = entry.get("reasons", [])
    known = NOTIFIED_REASONS | {PHASE_CHANGED}
    if not isinstance(reasons, list) or any(r not in known for r in reasons):
        raise ValueError(f"{where}.reasons: a list of {', '.join(sorted(known))}")
    timeout = entry.get("timeout", 5.0)
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not 0 < timeout <= 60:
        raise ValueError(f"{where}.timeout: seconds, more than 0 and at most 60")
    return NotificationSink(name, url, sink_format, frozenset(reasons), float(timeout))


def sinks_from_environment() -> tuple[NotificationSink, ...]:
    return parse_sinks(os.environ.get(NOTIFICATIONS_ENV))


def notifications_for(
    body: Mapping[str, Any], status: Mapping[str, Any] | None, events: Sequence[Event], now: datetime
) -> list[Notification]:
    """What one pass has to tell: a phase change (old status -> new) and the notable events."""
    meta = body.get("metadata") or {}
    before = (body.get("status") or {}).get("phase")
    after = (status or {}).get("phase") or before
    details = _details(body.get("kind", ""), status or {})

    def note(reason: str, message: str) -> Notification:
        return Notification(
            body.get("kind", ""),
            meta.get("namespace", ""),
            meta.get("name", ""),
            reason,
            message,
            now,
            after,
            before,
            details,
        )

    out = [note(e.reason, e.message) for e in events if e.reason in NOTIFIED_REASONS]
    if after is not None and after != before:
        message = (status or {}).get("message") or f"phase {before or 'none'} -> {after}"
        out.insert(0, note(PHASE_CHANGED, f"{before or 'new'} -> {after}: {message}"))
    return out


def _details(kind: str, status: Mapping[str, Any]) -> dict[str, Any]:
    keys = {
        "ModelDeployment": ("stableRevision", "candidateRevision", "failedRevision", "step"),
        "Experiment": ("winner",),
    }.get(kind, ())
    return {k: status[k] for k in keys if status.get(k) is not None}


def cloudevent(n: Notification) -> dict[str, Any]:
    """The notification as a CloudEvents 1.0 structured-mode JSON event."""
    plural = f"{n.kind.lower()}s"
    return {
        "specversion": "1.0",
        "id": str(uuid.uuid4()),
        "source": f"/apis/{GROUP}/v1alpha1/namespaces/{n.namespace}/{plural}/{n.name}",
        "type": f"io.mlrollouts.{n.kind.lower()}.{n.reason[0].lower()}{n.reason[1:]}",
        "subject": f"{n.namespace}/{n.name}",
        "time": n.time.isoformat().replace("+00:00", "Z"),
        "datacontenttype": "application/json",
        "data": {
            "kind": n.kind,
            "namespace": n.namespace,
            "name": n.name,
            "reason": n.reason,
            "message": n.message,
            "phase": n.phase,
            "previousPhase": n.previous_phase,
            **n.details,
        },
    }


def slack_message(n: Notification) -> dict[str, Any]:
    return {"text": f"{n.kind} {n.namespace}/{n.name}: {n.reason}: {n.message}"}


def payload(sink: NotificationSink, n: Notification) -> tuple[dict[str, Any], str]:
    if sink.format is SinkFormat.SLACK:
        return slack_message(n), "application/json"
    return cloudevent(n), CLOUDEVENTS_CONTENT_TYPE


class Notifier:
    """Delivers notifications in the background: one bounded queue and one worker per sink."""

    def __init__(self, sinks: Sequence[NotificationSink], first_backoff: float = FIRST_BACKOFF) -> None:
        self.sinks = tuple(sinks)
        self.first_backoff = first_backoff
        self.queues: dict[str, asyncio.Queue[Notification]] = {}
        self.workers: list[asyncio.Task[None]] = []
        self.client: httpx.AsyncClient | None = None

    def start(self) -> None:
        if not self.sinks or self.workers:
            return
        self.client = httpx.AsyncClient()
        for sink in self.sinks:
            self.queues[sink.name] = asyncio.Queue(maxsize=QUEUE_SIZE)
            self.workers.append(asyncio.create_task(self._deliver_all(sink), name=f"notify-{sink.name}"))

    def submit(self, notifications: Sequence[Notification]) -> None:
        """Queue without waiting; a full queue drops the notification (counted as overflow)."""
        for sink in self.sinks:
            queue = self.queues.get(sink.name)
            for n in notifications:
                if queue is None or not sink.wants(n.reason):
                    continue
                try:
                    queue.put_nowait(n)
                except asyncio.QueueFull:
                    NOTIFICATIONS.labels(sink.name, "overflow").inc()
                    log.warning(
                        "notification %s for %s/%s dropped: queue of %s full",
                        n.reason,
                        n.namespace,
                        n.name,
                        sink.name,
                    )

    async def _deliver_all(self, sink: NotificationSink) -> None:
        queue = self.queues[sink.name]
        while True:
            n = await queue.get()
            outcome = "delivered" if await self._deliver(sink, n) else "dropped"
            NOTIFICATIONS.labels(sink.name, outcome).inc()
            queue.task_done()

    async def _deliver(self, sink: NotificationSink, n: Notification) -> bool:
        assert self.client is not None
        body, content_type = payload(sink, n)
        delay = self.first_backoff
        for attempt in range(1, ATTEMPTS + 1):
            try:
                response = await self.client.post(
                    sink.url, json=body, headers={"Content-Type": content_type}, timeout=sink.timeout
                )
                if response.is_success:
                    return True
                problem = f"HTTP {response.status_code}"
            except httpx.HTTPError as exc:
                problem = f"{type(exc).__name__}: {exc}"
            if attempt < ATTEMPTS:
                await asyncio.sleep(delay)
                delay *= 2
        log.warning(
            "notification %s for %s/%s not delivered to %s after %d attempts: %s",
            n.reason,
            n.namespace,
            n.name,
            sink.name,
            ATTEMPTS,
            problem,
        )
        return False

    async def drain(self) -> None:
        """Wait until every queued notification is delivered or dropped (tests, shutdown)."""
        await asyncio.gather(*(q.join() for q in self.queues.values()))

    async def close(self) -> None:
        for task in self.workers:
            task.cancel()
        for task in self.workers:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.workers.clear()
        if self.client is not None:
            await self.client.aclose()
