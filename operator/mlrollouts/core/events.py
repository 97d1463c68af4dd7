"""Kubernetes events a decision asks the controller to emit, and the Event object that carries one."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

NORMAL = "Normal"
WARNING = "Warning"

COMPONENT = "mlrollouts-operator"
"""``source.component`` of the operator's events: the ``From`` column of ``kubectl describe``."""
REPORTING_CONTROLLER = "mlrollouts.io/operator"
"""``reportingComponent`` of the operator's events (the controller name the events API asks for)."""
MAX_MESSAGE_LENGTH = 1024
"""The API server refuses longer event messages."""


@dataclass(frozen=True)
class Event:
    """One event on the resource: ``type`` is Normal or Warning, ``reason`` a CamelCase word."""

    type: str
    reason: str
    message: str

    @classmethod
    def normal(cls, reason: str, message: str) -> Event:
        return cls(NORMAL, reason, message)

    @classmethod
    def warning(cls, reason: str, message: str) -> Event:
        return cls(WARNING, reason, message)


def _shortened(message: str) -> str:
    if len(message) <= MAX_MESSAGE_LENGTH:
        return message
    half = (MAX_MESSAGE_LENGTH - 3) // 2
    return f"{message[:half]}...{message[-half:]}"


def event_object(
    event: Event, involved: Mapping[str, Any], now: datetime, instance: str, suffix: str
) -> dict[str, Any]:
    """The core/v1 Event about ``involved`` (a resource body), named ``<resource>.<suffix>`` as the
    Kubernetes components name theirs."""
    meta = involved.get("metadata") or {}
    stamp = now.isoformat().replace("+00:00", "Z")
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {
            "name": f"{meta.get('name', '')}.{suffix}",
            "namespace": meta.get("namespace") or "default",
        },
        "involvedObject": {
            "apiVersion": involved.get("apiVersion"),
            "kind": involved.get("kind"),
            "name": meta.get("name"),
            "namespace": meta.get("namespace"),
            "uid": meta.get("uid"),
            "resourceVersion": meta.get("resourceVersion"),
        },
        "type": event.type,
        "reason": event.reason,
        "action": event.reason,
        "message": _shortened(event.message),
        "source": {"component": COMPONENT},
        "reportingComponent": REPORTING_CONTROLLER,
        "reportingInstance": instance,
        "count": 1,
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
    }
