"""The one duration grammar: parsing and formatting."""

from __future__ import annotations

import re

import pytest

from mlrollouts.core.durations import DURATION_PATTERN, format_duration, parse_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("0s", 0.0),
        ("500ms", 0.5),
        ("30s", 30.0),
        ("1.5s", 1.5),
        ("5m", 300.0),
        ("1h", 3600.0),
        ("1h30m", 5400.0),
        ("2h3m4s", 7384.0),
        ("1m500ms", 60.5),
    ],
)
def test_parse(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "0", "5", "5x", "m5", "-5s", "1d", "5 m", "1h-30m", "s", "1.s"])
def test_parse_rejects(text):
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration(text)


@pytest.mark.parametrize("seconds", [0.0, 0.5, 1.0, 59.0, 60.0, 90.5, 3600.0, 5400.0, 86400.0])
def test_format_round_trips(seconds):
    assert parse_duration(format_duration(seconds)) == pytest.approx(seconds)


def test_format_is_short():
    assert format_duration(5400) == "1h30m"
    assert format_duration(0.25) == "250ms"
    with pytest.raises(ValueError):
        format_duration(-1)


def test_surrounding_blanks_are_ignored():
    assert parse_duration(" 1m30s ") == 90.0


@pytest.mark.parametrize("text", ["0s", "500ms", "1.5s", "1h30m", "1m500ms", "1d", "5 m", "1.s", "-5s"])
def test_the_schema_pattern_is_the_same_grammar(text):
    try:
        parse_duration(text)
        parsed = True
    except ValueError:
        parsed = False
    assert parsed == bool(re.match(DURATION_PATTERN, text))
