"""Check specs (validation naming the field), contexts, Prometheus answer parsing, and how run_checks
wires queries together (against a recording provider; real Prometheus is in the integration suite)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from mlrollouts.analysis import AnalysisContext, CheckSpec, CheckSpecError, MetricProvider, Sample, Verdict
from mlrollouts.analysis.checks import run_checks
from mlrollouts.analysis.provider import _api_error_reason, _parse_result
from mlrollouts.analysis.verdicts import NoValues, QueryError


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
    ("spec", "message"),
    [
        (CheckSpec(name=""), r"checks\[0\]\.name"),
        (CheckSpec(name="x"), "exactly one of template or query"),
        (CheckSpec(name="x", template="error-rate", query="up"), "exactly one of template or query"),
        (CheckSpec(name="x", template="errors"), r"checks\[0\] 'x'\.template: unknown template 'errors'"),
        (CheckSpec(name="x", query="up{r='{{ rev }}'}"), r"\.query: unknown template variable 'rev'"),
        (CheckSpec(name="x", query="  "), r"\.query: the query is empty"),
        (CheckSpec(name="x", template="error-rate", min=2, max=1), "min 2 is greater than max 1"),
        (CheckSpec(name="x", template="error-rate", max=float("nan")), r"\.max: must be a finite number"),
        (
            CheckSpec(name="x", template="error-rate", max_ratio_to_stable=0),
            r"\.maxRatioToStable: must be a positive number",
        ),
        (
            CheckSpec(name="x", template="prediction-drift", max_ratio_to_stable=2),
            "already compares with stable",
        ),
        (CheckSpec(name="x", template="error-rate", window="5 minutes"), r"\.window: invalid duration"),
    ],
)
def test_invalid_specs_name_the_field(spec, message):
    with pytest.raises(CheckSpecError, match=message):
        spec.validate("checks[0]")


def test_spec_from_camel_case_mapping_and_from_objects():
    spec = CheckSpec.from_any(
        {"name": "err", "template": "error-rate", "maxRatioToStable": 2, "window": "1m"}
    )
    assert spec == CheckSpec(name="err", template="error-rate", max_ratio_to_stable=2, window="1m")

    class Model:
        name = "lat"
        template = "latency-p99"
        query = None
        min = None
        max = 0.5
        max_ratio_to_stable = None
        window = None

    assert CheckSpec.from_any(Model()) == CheckSpec(name="lat", template="latency-p99", max=0.5)


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
    [result] = await run_checks([CheckSpec(name="drift", template="prediction-drift", max=0.2)], ctx(p))
    assert result.verdict is Verdict.FAIL
    assert result.value == pytest.approx(0.677838, abs=1e-6)
    assert "label=0.6778" in result.message


async def test_drift_without_stable_revision_is_inconclusive():
    p = RecordingProvider({})
    [result] = await run_checks(
        [CheckSpec(name="drift", template="prediction-drift", max=0.2)], ctx(p, stable_revision=None)
    )
    assert result.verdict is Verdict.INCONCLUSIVE and "no stable revision" in result.message


async def test_bad_specs_and_missing_address_become_errors_without_raising():
    p = RecordingProvider({"sum(up)": [Sample({}, 1.0)]})
    results = await run_checks(
        [{"name": "bad", "template": "nope"}, {"name": "ok", "query": "sum(up)", "min": 1}], ctx(p)
    )
    assert [r.verdict for r in results] == [Verdict.ERROR, Verdict.PASS]
    assert "template: unknown template 'nope'" in results[0].message

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
    specs = [CheckSpec.from_any(check) for check in analysis.checks]
    assert specs == [
        CheckSpec(name="err", template="error-rate", max=0.05),
        CheckSpec(name="q", query='sum(up{r="{{ revision }}"})', max_ratio_to_stable=2.0, window="1m"),
    ]
    p = RecordingProvider({'sum(up{r="b"})': [Sample({}, 3.0)], 'sum(up{r="a"})': [Sample({}, 2.0)]})
    results = await run_checks(analysis.checks, replace(c, provider=p, min_samples=0))
    assert results[1].verdict is Verdict.PASS and results[1].value == 3.0 and results[1].stable_value == 2.0
    # Samples are counted over each check's own window: 1m for "q", the 30s interval for "err".
    assert 'sum(increase(mlserving_requests_total{model="m",revision="b"}[1m]))' in p.queries
    assert any('revision="b"}[30s]' in q for q in p.queries)  # the template uses the analysis interval
