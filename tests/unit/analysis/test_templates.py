"""Rendering of check queries and the built-in templates."""

from __future__ import annotations

import pytest

from mlrollouts.analysis.templates import BUILTIN_TEMPLATES, SAMPLES_QUERY, prometheus_range, render
from mlrollouts.api import QUERY_VARIABLES, QueryTemplateError, query_variables

VARS = {
    "namespace": "ml",
    "name": "fraud",
    "model": "fraud-model",
    "revision": "c4nd1d",
    "stable_revision": "st4bl3",
    "variant": "c4nd1d",
    "interval": "30s",
}


def test_renders_every_variable():
    query = " ".join(f"{name}={{{{ {name} }}}}" for name in QUERY_VARIABLES)
    assert render(query, VARS) == (
        "namespace=ml name=fraud model=fraud-model revision=c4nd1d stable_revision=st4bl3 variant=c4nd1d interval=30s"
    )


def test_whitespace_inside_braces_is_optional():
    assert render("{{revision}}-{{   model }}", VARS) == "c4nd1d-fraud-model"


def test_unknown_variable_is_named():
    with pytest.raises(QueryTemplateError, match="'revison'") as info:
        render('up{revision="{{ revison }}"}', VARS)
    assert "allowed: namespace, name, model" in str(info.value)


def test_malformed_placeholder_is_an_error():
    with pytest.raises(QueryTemplateError, match=r"unknown variable\(s\) 'interval \| default'"):
        query_variables("rate(x[{{ interval | default }}])")
    with pytest.raises(QueryTemplateError, match="unbalanced"):
        query_variables("rate(x[{{ interval ]")


def test_variable_without_value_is_an_error():
    with pytest.raises(QueryTemplateError, match="'stable_revision' has no value"):
        render('x{revision="{{ stable_revision }}"}', {**VARS, "stable_revision": None})


def test_values_cannot_break_out_of_a_label_string():
    rendered = render('x{model="{{ model }}"}', {**VARS, "model": 'a"}) or vector(1'})
    assert rendered == 'x{model="a\\"}) or vector(1"}'


def test_query_variables_lists_used_names_once():
    assert query_variables("{{ revision }} {{ interval }} {{ revision }}") == ["revision", "interval"]


@pytest.mark.parametrize("name", sorted(BUILTIN_TEMPLATES))
def test_builtin_templates_render_with_candidate_selectors(name):
    rendered = render(BUILTIN_TEMPLATES[name].query, VARS)
    assert "{{" not in rendered
    assert "[30s]" in rendered
    if name in ("shadow-agreement", "reward-rate"):
        assert 'route="fraud",variant="c4nd1d"' in rendered
    else:
        assert 'model="fraud-model",revision="c4nd1d"' in rendered


def test_builtin_queries_use_the_contract_metric_names():
    q = {name: render(t.query, VARS) for name, t in BUILTIN_TEMPLATES.items()}
    assert "mlserving_requests_total" in q["error-rate"] and 'code=~"5.."' in q["error-rate"]
    assert q["latency-p99"].startswith("histogram_quantile(0.99,")
    assert q["latency-p95"].startswith("histogram_quantile(0.95,")
    assert q["latency-p50"].startswith("histogram_quantile(0.5,")
    assert "mlserving_request_duration_seconds_bucket" in q["latency-p50"]
    assert "mlserving_predictions_total" in q["prediction-drift"]
    assert "by (output, bucket)" in q["prediction-drift"]
    assert "mlrouter_shadow_agreement_total" in q["shadow-agreement"]
    assert "mlrouter_reward_sum" in q["reward-rate"] and "mlrouter_feedback_total" in q["reward-rate"]
    assert BUILTIN_TEMPLATES["prediction-drift"].distribution
    assert render(SAMPLES_QUERY, VARS) == (
        'sum(increase(mlserving_requests_total{model="fraud-model",revision="c4nd1d"}[30s]))'
    )


@pytest.mark.parametrize(
    ("value", "promql"),
    [
        ("30s", "30s"),
        (" 1m ", "1m"),
        ("1h30m", "1h30m"),
        ("500ms", "500ms"),
        ("1.5m", "90s"),
        ("0.25s", "250ms"),
        (30, "30s"),
        (601, "601s"),
        (2.5, "2500ms"),
    ],
)
def test_prometheus_range(value, promql):
    assert prometheus_range(value) == promql


@pytest.mark.parametrize(
    "bad", ["", "30", "5 m", "1,5m", "-1s", "0s", "1d", "2w", 0, -3, float("nan"), True, "abc"]
)
def test_prometheus_range_rejects(bad):
    with pytest.raises(ValueError, match="invalid duration"):
        prometheus_range(bad)
