"""Timestamps read back from the API: zone-aware, naive means UTC, anything unreadable is None."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from mlrollouts.core.times import aware, parse_timestamp

NOON = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    "text",
    ["2026-03-01T12:00:00Z", "2026-03-01T12:00:00+00:00", "2026-03-01T12:00:00", "2026-03-01T13:00:00+01:00"],
)
def test_a_timestamp_reads_as_the_same_instant_in_any_of_its_forms(text):
    parsed = parse_timestamp(text)
    assert parsed == NOON
    assert parsed is not None and parsed.tzinfo is not None


@pytest.mark.parametrize("value", [None, "", "yesterday", "2026-13-01T00:00:00Z", 1767225600, NOON])
def test_anything_but_a_timestamp_string_reads_as_none(value):
    assert parse_timestamp(value) is None


def test_aware_gives_a_naive_time_the_utc_zone_and_keeps_any_other_zone():
    assert aware(datetime(2026, 3, 1, 12, 0)) == NOON
    east = datetime(2026, 3, 1, 13, 0, tzinfo=timezone(timedelta(hours=1)))
    assert aware(east) is east
    assert aware(None) is None
