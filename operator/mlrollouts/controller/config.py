"""Operator-wide settings (from ``mlrollouts operator run`` flags and environment)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from fnmatch import fnmatchcase

from mlrollouts.controller.notifications import NotificationSink, sinks_from_environment
from mlrollouts.core.uri_policy import ALLOW_ENV, env_allows_private_hosts, model_uri_refusal


@dataclass(frozen=True)
class OperatorConfig:
    serving_image: str = "mlrollouts/serving:0.1.0"
    prometheus_url: str | None = None
    prometheus_timeout: float = 10.0
    """Seconds one Prometheus query may take when a resource names no ``prometheus.timeout``."""
    upstream_template: str = "http://{service}.{namespace}.svc:80"
    history_size: int = 10
    tick: float = 30.0
    """Longest sleep of a resource's driver between re-checks (it wakes earlier when work is due)."""
    poll: float = 1.0
    """Seconds between passes while waiting for readiness or for the traffic provider."""
    allowed_images: tuple[str, ...] = ()
    """Shell-style patterns of the images a resource may ask for; empty allows every image. The
    default serving image is always allowed."""
    allow_private_model_hosts: bool = field(
        default_factory=lambda: env_allows_private_hosts(os.environ.get(ALLOW_ENV))
    )
    """Let ``http(s)://`` model URIs name loopback, link-local and cloud metadata hosts."""
    notification_sinks: tuple[NotificationSink, ...] = field(default_factory=sinks_from_environment)
    """Where phase changes, promotions, rollbacks and experiment conclusions are sent."""

    def model_uri_refusal(self, uri: str, location: str) -> str | None:
        """Why the model URI at ``location`` may not be fetched (the admission webhook asks the same)."""
        return model_uri_refusal(uri, location, self.allow_private_model_hosts)

    def image_allowed(self, image: str) -> bool:
        if not self.allowed_images or image == self.serving_image:
            return True
        return any(fnmatchcase(image, pattern) for pattern in self.allowed_images)

    def image_refusal(self, images: Mapping[str, str | None]) -> str | None:
        """Why a resource may not run the first of ``images`` (field path -> image; ``None`` when
        the field is not set) that is not allowed, naming the field; ``None`` when all are."""
        for location, image in images.items():
            if image is not None and not self.image_allowed(image):
                allowed = ", ".join((self.serving_image, *self.allowed_images))
                return f"{location}: image {image!r} is not allowed by the operator (allowed: {allowed})"
        return None


def parse_image_patterns(text: str | None) -> tuple[str, ...]:
    """``MLROLLOUTS_ALLOWED_IMAGES``: patterns separated by commas (or whitespace)."""
    return tuple(p for p in (text or "").replace(",", " ").split() if p)
