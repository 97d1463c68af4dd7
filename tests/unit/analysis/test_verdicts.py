"""Threshold -> verdict logic: NaN, no values, errors, thresholds, ratio to stable, minSamples."""

from __future__ import annotations

import math

import pytest

from mlrollouts.analysis.verdicts import NoValues, QueryError, Thresholds, judge
from mlrollouts.core.verdicts import Verdict


def v(thresholds=None, value=0.0, **kw):
    return judge("c", thresholds or Thresholds(max=1.0), value, **kw)


def test_within_max_passes_and_above_fails():
    assert v(Thresholds(max=0.05), 0.01).verdict is Verdict.PASS
    r = v(Thresholds(max=0.05), 0.2)
    assert r.verdict is Verdict.FAIL
    assert "above max 0.05" in r.message
    assert r.value == 0.2


def test_min_threshold():
    assert v(Thresholds(min=0.9), 0.95).verdict is Verdict.PASS
    r = v(Thresholds(min=0.9), 0.5)
    assert r.verdict is Verdict.FAIL and "below min 0.9" in r.message


def test_boundaries_are_inclusive():
    assert v(Thresholds(min=1, max=2), 1.0).verdict is Verdict.PASS
    assert v(Thresholds(min=1, max=2), 2.0).verdict is Verdict.PASS


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_nan_and_infinite_values_are_no_values_never_zero(bad):
    r = v(Thresholds(max=1.0), bad)
    assert r.verdict is Verdict.INCONCLUSIVE
    assert r.value is None
    assert "no values" in r.message


def test_empty_vector_is_inconclusive_even_with_a_min_threshold():
    # A zero would fail a min threshold; "no values" must not be treated as 0.
    r = v(Thresholds(min=0.5), NoValues("the query returned an empty vector"))
    assert r.verdict is Verdict.INCONCLUSIVE
    assert "empty vector" in r.message


def test_query_error_is_an_error_never_a_pass():
    r = v(Thresholds(max=1.0), QueryError("the query returned 3 series"))
    assert r.verdict is Verdict.ERROR
    assert "3 series" in r.message
    assert not r.passed


def test_sample_query_error_is_an_error_even_when_the_value_passes():
    r = v(Thresholds(max=1.0), 0.1, samples=QueryError("timeout"), min_samples=10)
    assert r.verdict is Verdict.ERROR and "sample count" in r.message


def test_error_wins_over_too_few_samples():
    r = v(Thresholds(max=1.0), QueryError("unreachable"), samples=0.0, min_samples=10)
    assert r.verdict is Verdict.ERROR


def test_too_few_samples_is_inconclusive_not_pass_and_not_fail():
    bad = v(Thresholds(max=0.05), 0.9, samples=3.0, min_samples=50, window="30s")
    good = v(Thresholds(max=0.05), 0.0, samples=3.0, min_samples=50, window="30s")
    for r in (bad, good):
        assert r.verdict is Verdict.INCONCLUSIVE
        assert "3 candidate requests in the last 30s, fewer than minSamples 50" in r.message
        assert r.samples == 3.0


def test_enough_samples_lets_the_threshold_decide():
    assert v(Thresholds(max=0.05), 0.9, samples=50.0, min_samples=50).verdict is Verdict.FAIL


def test_missing_samples_count_as_zero():
    assert v(Thresholds(max=1), 0.1, samples=NoValues("empty"), min_samples=1).verdict is Verdict.INCONCLUSIVE


def test_ratio_to_stable():
    t = Thresholds(max_ratio_to_stable=1.5)
    ok = v(t, 0.12, stable=0.1)
    assert ok.verdict is Verdict.PASS and ok.stable_value == 0.1 and "1.2x stable" in ok.message
    bad = v(t, 0.2, stable=0.1)
    assert bad.verdict is Verdict.FAIL and "2x stable 0.1" in bad.message


def test_ratio_with_stable_zero_and_candidate_zero_passes():
    r = v(Thresholds(max_ratio_to_stable=2), 0.0, stable=0.0)
    assert r.verdict is Verdict.PASS and "both 0" in r.message


def test_ratio_with_stable_zero_and_candidate_positive_fails_as_infinite():
    r = v(Thresholds(max_ratio_to_stable=2), 0.01, stable=0.0)
    assert r.verdict is Verdict.FAIL and "infinite" in r.message


def test_ratio_with_stable_missing_is_inconclusive():
    r = v(Thresholds(max_ratio_to_stable=2), 0.01, stable=NoValues("stable returned NaN"))
    assert r.verdict is Verdict.INCONCLUSIVE and "stable has no values" in r.message
    r = v(Thresholds(max_ratio_to_stable=2), 0.01, stable=None)
    assert r.verdict is Verdict.INCONCLUSIVE and "no stable revision" in r.message
    r = v(Thresholds(max_ratio_to_stable=2), 0.01, stable=math.nan)
    assert r.verdict is Verdict.INCONCLUSIVE


def test_ratio_with_negative_stable_is_an_error():
    r = v(Thresholds(max_ratio_to_stable=2), 0.01, stable=-0.5)
    assert r.verdict is Verdict.ERROR and "negative" in r.message


def test_stable_query_error_is_an_error():
    r = v(Thresholds(max_ratio_to_stable=2), 0.01, stable=QueryError("HTTP 400"))
    assert r.verdict is Verdict.ERROR and "stable query failed: HTTP 400" in r.message


def test_absolute_threshold_fails_before_ratio_is_considered():
    r = v(Thresholds(max=0.05, max_ratio_to_stable=2), 0.5, stable=NoValues("none"))
    assert r.verdict is Verdict.FAIL


def test_no_threshold_records_the_value():
    r = judge("c", Thresholds(), 3.0)
    assert r.verdict is Verdict.PASS and "no threshold" in r.message


def test_status_dict_is_json_ready():
    r = v(Thresholds(max_ratio_to_stable=2), 0.1, stable=0.1, samples=120.0, query="q", stable_query="sq")
    assert r.as_status() == {
        "name": "c",
        "verdict": "Pass",
        "message": r.message,
        "value": 0.1,
        "stableValue": 0.1,
        "samples": 120.0,
        "query": "q",
        "stableQuery": "sq",
    }
    nothing = v(Thresholds(max=1), NoValues("empty")).as_status()
    assert "value" not in nothing and nothing["verdict"] == "Inconclusive"
