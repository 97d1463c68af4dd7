"""The one duration grammar of the API: a sequence of numbers with a unit ms, s, m or h
(``500ms``, ``30s``, ``1.5m``, ``1h30m``), as Kubernetes and Prometheus users write them."""

from __future__ import annotations

import re

DURATION_PATTERN = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"
"""The grammar as the regular expression the CRD schema checks."""

_DURATION = re.compile(DURATION_PATTERN)
_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)")
_UNIT_SECONDS = {"s": 1.0, "m": 60.0, "h": 3600.0}
_FORMAT_UNITS = (("h", 3_600_000), ("m", 60_000), ("s", 1000), ("ms", 1))


def parse_duration(value: str) -> float:
    """Seconds in a duration such as ``500ms``, ``30s``, ``5m``, ``1h30m``."""
    if not isinstance(value, str) or not _DURATION.match(value.strip()):
        raise ValueError(
            f"invalid duration {value!r}: use a number with a unit ms, s, m or h, e.g. 30s, 5m, 1h30m"
        )
    total = 0.0
    for number, unit in _PART.findall(value.strip()):
        # milliseconds divide, so that "87ms" is exactly 87 / 1000
        total += float(number) / 1000 if unit == "ms" else float(number) * _UNIT_SECONDS[unit]
    return total


def format_duration(seconds: float) -> str:
    """The shortest duration for a number of seconds, to the millisecond (inverse of `parse_duration`)."""
    if seconds < 0:
        raise ValueError("a duration cannot be negative")
    millis = round(seconds * 1000)
    if millis == 0:
        return "0s"
    parts: list[str] = []
    for unit, size in _FORMAT_UNITS:
        count, millis = divmod(millis, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)
