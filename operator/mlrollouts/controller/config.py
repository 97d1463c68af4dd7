"""Operator-wide settings (from ``mlrollouts operator run`` flags and environment)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class OperatorConfig:
    serving_image: str = "mlrollouts/serving:0.1.0"
    prometheus_url: str | None = None
    upstream_template: str = "http://{service}.{namespace}.svc:80"
    history_size: int = 10
    tick: float = 30.0
    """Longest sleep of a resource's driver between re-checks (it wakes earlier when work is due)."""
    poll: float = 1.0
    """Seconds between passes while waiting for readiness or for the traffic provider."""
