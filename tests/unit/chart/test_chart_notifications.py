"""The chart hands the notification sinks to the operator through a Secret."""

from __future__ import annotations

import pytest
from chart_render import render, supported_versions, validate_official

from mlrollouts.controller.notifications import parse_sinks

SINKS = [
    {"name": "events", "url": "http://events.example:8080/"},
    {"name": "chat", "url": "https://hooks.example/T0/B0/x", "format": "Slack", "reasons": ["Promoted"]},
]


def env_of(rendered) -> dict:
    return {e["name"]: e for e in rendered.container.get("env", [])}


def test_sinks_reach_the_operator_from_a_secret():
    rendered = render({"notifications": {"sinks": SINKS}})
    secret = rendered.one("Secret", "mlr-mlrollouts-notifications")
    for version in supported_versions():
        validate_official(secret, version)
    sinks = parse_sinks(secret["stringData"]["sinks.json"])  # what the operator reads, read as it does
    assert [s.name for s in sinks] == ["events", "chat"]
    ref = env_of(rendered)["MLROLLOUTS_NOTIFICATIONS"]["valueFrom"]["secretKeyRef"]
    assert ref == {"name": "mlr-mlrollouts-notifications", "key": "sinks.json"}


def test_existing_secret_is_used_as_is_and_none_by_default():
    rendered = render({"notifications": {"existingSecret": "my-sinks"}})
    assert not [s for s in rendered.of_kind("Secret") if s["metadata"]["name"].endswith("-notifications")]
    ref = env_of(rendered)["MLROLLOUTS_NOTIFICATIONS"]["valueFrom"]["secretKeyRef"]
    assert ref["name"] == "my-sinks"
    assert "MLROLLOUTS_NOTIFICATIONS" not in env_of(render())


def test_a_bad_sink_is_refused_by_the_values_schema():
    with pytest.raises(Exception, match="format"):
        render({"notifications": {"sinks": [{"name": "x", "url": "http://x/", "format": "Teams"}]}})
