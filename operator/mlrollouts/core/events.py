"""Kubernetes events a decision asks the controller to emit."""

from __future__ import annotations

from dataclasses import dataclass

NORMAL = "Normal"
WARNING = "Warning"


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
