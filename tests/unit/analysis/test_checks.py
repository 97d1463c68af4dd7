"""Checks that cannot run (an Error naming the field), contexts, Prometheus answer parsing, and how
run_checks wires queries together (against a recording provider; real Prometheus is in the
integration suite)."""

from __future__ import annotations

import re
from dataclasses import replace

import pytest

from mlrollouts.analysis import AnalysisConfigError, AnalysisContext, MetricProvider, Sample, thresholds
from mlrollouts.analysis.checks import run_checks
from mlrollouts.analysis.provider import _api_error_reason, _parse_result
from mlrollouts.analysis.verdicts import NoValues, QueryError, Thresholds
from mlrollouts.api import Check
from mlrollouts.core.verdicts import Verdict


class RecordingProvider(MetricProvider):
    """Answers from a table keyed by a substring of the query and records every query it gets."""

    def __init__(self, answers):
        self.answers = answers
        self.queries: list[str] = []

    async def query_vector(self, promql, at=None):
        self.queries.append(promql)
        for key, answer in self.answers.items():
            if key in promql:
                return answer
        return []


def ctx(provider, **kw):
    base = dict(
        namespace="ml", name="fraud", model="m", revision="cand", stable_revision="stab", interval="30s"
    )
    base.update(kw)
    return AnalysisContext(provider=provider, **base)


@pytest.mark.parametrize(
    ("check", "message"),
    [
        ({"name": "", "template": "error-rate", "max": 1}, r"^checks\[0\]\.name: "),
        ({"name": "x", "max": 1}, r"^checks\[0\]: needs exactly one of template or query"),
        (
            {"name": "x", "template": "error-rate", "query": "up", "max": 1},
            "exactly one of template or query",
        ),
        (
            {"name": "x", "template": "errors", "max": 1},
            r"^checks\[0\]\.template: Input should be 'error-rate'",
        ),
        (
            {"name": "x", "query": "up{r='{{ rev }}'}", "max": 1},
            r"^checks\[0\]\.query: query uses unknown variable\(s\) 'rev'; allowed: namespace, ",
        ),
        ({"name": "x", "query": "  ", "max": 1}, r"^checks\[0\] 'x'\.query: the query is empty"),
        (
            {"name": "x", "template": "error-rate", "min": 2, "max": 1},
            r"^checks\[0\]\.min: min \(2\.0\) must be below",
        ),
        (
            {"name": "x", "template": "error-rate", "maxRatioToStable": 0},
            r"^checks\[0\]\.maxRatioToStable: Input should be greater than 0",
        ),
        (
            {"name": "x", "template": "prediction-drift", "maxRatioToStable": 2},
            r"^checks\[0\] 'x'\.maxRatioToStable: prediction-drift already compares with stable",
        ),
        (
            {"name": "x", "template": "error-rate", "max": 1, "window": "5 minutes"},
            r"^checks\[0\]\.window: invalid duration '5 minutes'",
        ),
        # the API's duration grammar: no days, weeks or years
        (
            {"name": "x", "template": "error-rate", "max": 1, "window": "1d"},
            r"^checks\[0\]\.window: invalid duration",
        ),
        (
            {"name": "x", "template": "error-rate", "max": 1, "window": "0s"},
            r"^checks\[0\] 'x'\.window: invalid duration '0s': must be longer than zero",
        ),
    ],
)
async def test_checks_that_cannot_run_are_errors_naming_the_field(check, message):
    p = RecordingProvider({})
    [result] = await run_checks([check], ctx(p))
    assert result.verdict is Verdict.ERROR
    assert re.search(message, result.message), result.message
    assert p.queries == []  # nothing was asked of Prometheus


async def test_checks_from_camel_case_and_snake_case_mappings_and_from_objects():
    class Model:
        name = "lat"
        template = "latency-p99"
        query = None
        min = None
        max = 0.5
        max_ratio_to_stable = None
        window = None

    p = RecordingProvider({"histogram_quantile": [Sample({}, 0.1)], "increase(": [Sample({}, 100.0)]})
    results = await run_checks(
        [
            {"name": "err", "template": "error-rate", "maxRatioToStable": 2, "window": "1m"},
            {"name": "snake", "query": "sum(up)", "max_ratio_to_stable": 2},
            Model(),
        ],
        ctx(p),
    )
    assert [r.name for r in results] == ["err", "snake", "lat"]
    assert [r.verdict for r in results] == [Verdict.INCONCLUSIVE, Verdict.INCONCLUSIVE, Verdict.PASS]
    assert any("[1m]" in q and "mlserving_requests_total" in q for q in p.queries)
    assert thresholds(Check(name="lat", template="latency-p99", max=0.5)) == Thresholds(max=0.5)


def test_unusable_prometheus_timeout_is_a_config_error():
    for timeout, message in (("soon", "invalid duration 'soon'"), ("0s", "must be longer than zero")):
        with pytest.raises(AnalysisConfigError, match=f"analysis.prometheus.timeout: .*{message}"):
            AnalysisContext.from_spec(
                {"prometheus": {"timeout": timeout}}, namespace="ml", name="n", model="m", revision="r"
            )


def test_context_from_analysis_spec_with_operator_default_address():
    c = AnalysisContext.from_spec(
        {"interval": "15s", "minSamples": 40, "prometheus": {"timeout": "3s"}},
        namespace="ml",
        name="fraud",
        model="m",
        revision="r2",
        stable_revision="r1",
        default_prometheus_address="http://prom:9090",
    )
    assert (c.interval, c.min_samples, c.prometheus_address, c.prometheus_timeout) == (
        "15s",
        40,
        "http://prom:9090",
        3.0,
    )
    assert c.variables("15s", stable=True)["revision"] == "r1"
    assert c.variables("15s", stable=True)["variant"] == "r1"
    assert c.variables("15s")["variant"] == "r2"


def test_parse_prometheus_answers():
    assert _parse_result([]) == []
    assert _parse_result([1700000000.1, "2.5"]) == [Sample({}, 2.5)]
    vector = [{"metric": {"a": "1"}, "value": [1.0, "NaN"]}, {"metric": {}, "value": [1.0, "+Inf"]}]
    parsed = _parse_result(vector)
    assert [s.labels for s in parsed] == [{"a": "1"}, {}]
    assert isinstance(_parse_result([{"metric": {}, "values": [[1, "1"]]}]), QueryError)
    assert isinstance(_parse_result({"x": 1}), QueryError)


def test_api_error_reason_extracts_prometheus_message():
    from prometheus_api_client.exceptions import PrometheusApiClientException

    exc = PrometheusApiClientException(
        "HTTP Status Code {} ({!r})".format(
            400, b'{"status":"error","errorType":"bad_data","error":"1:5: parse error: unexpected \\"}\\""}'
        )
    )
    assert _api_error_reason(exc) == 'HTTP 400 bad_data: 1:5: parse error: unexpected "}"'


async def test_provider_query_outcomes():
    p = RecordingProvider(
        {
            "one": [Sample({}, 0.25)],
            "nan": [Sample({}, float("nan"))],
            "inf": [Sample({}, float("inf"))],
            "many": [Sample({"revision": "a"}, 1.0), Sample({"revision": "b"}, 2.0)],
            "fail": QueryError("boom"),
        }
    )
    assert await p.query("one") == 0.25
    assert isinstance(await p.query("nan"), NoValues)
    assert isinstance(await p.query("inf"), NoValues)
    assert isinstance(await p.query("empty"), NoValues)
    many = await p.query("many")
    assert isinstance(many, QueryError) and "2 series" in many.reason and 'revision="b"' in many.reason
    assert await p.query("fail") == QueryError("boom")


async def test_ratio_check_queries_candidate_and_stable_and_shares_the_sample_count():
    p = RecordingProvider(
        {
            'revision="cand",code': [Sample({}, 1.0)],  # not used directly: error-rate numerator
            "increase(mlserving_requests_total": [Sample({}, 200.0)],
            'latency-marker"': [],
        }
    )
    checks = [
        {"name": "p99", "template": "latency-p99", "maxRatioToStable": 1.5},
        {"name": "custom", "query": 'sum(up{rev="{{ revision }}"})', "maxRatioToStable": 2},
    ]
    results = await run_checks(checks, ctx(p, min_samples=10))
    assert [r.name for r in results] == ["p99", "custom"]
    assert any('revision="cand"' in q and "histogram_quantile" in q for q in p.queries)
    assert any('revision="stab"' in q and "histogram_quantile" in q for q in p.queries)
    assert 'sum(up{rev="stab"})' in p.queries and 'sum(up{rev="cand"})' in p.queries
    assert sum("increase(mlserving_requests_total" in q for q in p.queries) == 1
    assert results[1].stable_query == 'sum(up{rev="stab"})'
    assert all(r.samples == 200.0 for r in results)
    # No answers for the value queries: no values, so inconclusive (never a pass).
    assert {r.verdict for r in results} == {Verdict.INCONCLUSIVE}


async def test_drift_check_takes_the_worst_output():
    p = RecordingProvider(
        {
            'predictions_total{model="m",revision="cand"}': [
                Sample({"output": "label", "bucket": "a"}, 30.0),
                Sample({"output": "label", "bucket": "b"}, 70.0),
            ],
            'predictions_total{model="m",revision="stab"}': [
                Sample({"output": "label", "bucket": "a"}, 70.0),
                Sample({"output": "label", "bucket": "b"}, 30.0),
            ],
            "increase(mlserving_requests_total": [Sample({}, 100.0)],
        }
    )
    [result] = await run_checks([Check(name="drift", template="prediction-drift", max=0.2)], ctx(p))
    assert result.verdict is Verdict.FAIL
    assert result.value == pytest.approx(0.677838, abs=1e-6)
    assert "label=0.6778" in result.message


async def test_drift_without_stable_revision_is_inconclusive():
    p = RecordingProvider({})
    [result] = await run_checks(
        [Check(name="drift", template="prediction-drift", max=0.2)], ctx(p, stable_revision=None)
    )
    assert result.verdict is Verdict.INCONCLUSIVE and "no stable revision" in result.message


async def test_bad_specs_and_missing_address_become_errors_without_raising():
    p = RecordingProvider({"sum(up)": [Sample({}, 1.0)]})
    results = await run_checks(
        [{"name": "bad", "template": "nope"}, {"name": "ok", "query": "sum(up)", "min": 1}], ctx(p)
    )
    assert [r.verdict for r in results] == [Verdict.ERROR, Verdict.PASS]
    assert results[0].message.startswith("checks[0].template: Input should be 'error-rate'")

    no_address = AnalysisContext(namespace="ml", name="n", model="m", revision="r")
    [r] = await run_checks([{"name": "ok", "query": "sum(up)", "min": 1}], no_address)
    assert r.verdict is Verdict.ERROR and "analysis.prometheus.address" in r.message

    bad_interval = ctx(p, interval="soon")
    [r] = await run_checks([{"name": "ok", "query": "sum(up)", "min": 1}], bad_interval)
    assert r.verdict is Verdict.ERROR and "analysis.interval" in r.message


async def test_api_models_flow_through_context_and_checks():
    from mlrollouts.api.modeldeployment import Analysis

    analysis = Analysis.model_validate(
        {
            "interval": "30s",
            "minSamples": 20,
            "prometheus": {"address": "http://prom:9090", "timeout": "2s"},
            "checks": [
                {"name": "err", "template": "error-rate", "max": 0.05},
                {"name": "q", "query": 'sum(up{r="{{ revision }}"})', "maxRatioToStable": 2, "window": "1m"},
            ],
        }
    )
    c = AnalysisContext.from_spec(
        analysis, namespace="ml", name="fraud", model="m", revision="b", stable_revision="a"
    )
    assert (c.interval, c.min_samples, c.prometheus_address, c.prometheus_timeout) == (
        "30s",
        20,
        "http://prom:9090",
        2.0,
    )
    p = RecordingProvider({'sum(up{r="b"})': [Sample({}, 3.0)], 'sum(up{r="a"})': [Sample({}, 2.0)]})
    results = await run_checks(analysis.checks, replace(c, provider=p, min_samples=0))
    assert results[1].verdict is Verdict.PASS and results[1].value == 3.0 and results[1].stable_value == 2.0
    # Samples are counted over each check's own window: 1m for "q", the 30s interval for "err".
    assert 'sum(increase(mlserving_requests_total{model="m",revision="b"}[1m]))' in p.queries
    assert any('revision="b"}[30s]' in q for q in p.queries)  # the template uses the analysis interval
