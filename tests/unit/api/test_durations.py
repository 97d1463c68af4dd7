"""Duration fields of the models: the core grammar, with the field named on error."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from mlrollouts.api import PrometheusConfig
from mlrollouts.core.durations import DURATION_PATTERN


def test_model_field_names_the_field():
    assert PrometheusConfig(timeout="2s").timeout == "2s"
    with pytest.raises(ValidationError) as exc:
        PrometheusConfig.model_validate({"timeout": "2 seconds"})
    error = exc.value.errors()[0]
    assert error["loc"] == ("timeout",)
    assert "invalid duration" in error["msg"]


def test_model_field_rejects_units_beyond_hours():
    with pytest.raises(ValidationError, match="invalid duration"):
        PrometheusConfig.model_validate({"timeout": "1d"})


def test_schema_carries_the_core_pattern():
    schema = PrometheusConfig.model_json_schema(by_alias=True)
    assert schema["properties"]["timeout"]["pattern"] == DURATION_PATTERN
