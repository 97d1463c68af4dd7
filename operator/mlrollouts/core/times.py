"""Timestamps as the API writes them (RFC 3339, ``Z`` for UTC), read back as timezone-aware datetimes.

A timestamp without a zone means UTC: that is how the operator writes them, and an API server or a
client that drops the zone must not shift them by the local offset.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any


def aware(value: datetime | None) -> datetime | None:
    """``value`` with UTC as its zone when it has none."""
    if value is None:
        return None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def parse_timestamp(value: Any) -> datetime | None:
    """A timestamp string as a timezone-aware datetime; ``None`` for anything that is not one."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return aware(parsed)
