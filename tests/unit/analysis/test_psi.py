"""Population stability index against a hand computation."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mlrollouts.analysis.psi import drift_by_output, histograms_by_output, population_stability_index


def test_psi_matches_hand_computation():
    # candidate shares 0.3/0.7, stable 0.7/0.3:
    # (0.3-0.7)*ln(0.3/0.7) + (0.7-0.3)*ln(0.7/0.3) = 0.8*ln(7/3)
    psi = population_stability_index({"a": 30, "b": 70}, {"a": 700, "b": 300})
    assert psi == pytest.approx(0.8 * math.log(7 / 3), rel=1e-12)
    assert psi == pytest.approx(0.677838, abs=1e-6)


def test_psi_three_buckets_by_hand():
    cand = {"x": 20, "y": 30, "z": 50}
    stab = {"x": 25, "y": 25, "z": 50}
    expected = (0.2 - 0.25) * math.log(0.2 / 0.25) + (0.3 - 0.25) * math.log(0.3 / 0.25)
    assert population_stability_index(cand, stab) == pytest.approx(expected, rel=1e-12)


def test_equal_distributions_have_zero_psi_whatever_the_volume():
    assert population_stability_index({"a": 1, "b": 3}, {"a": 100, "b": 300}) == pytest.approx(0.0, abs=1e-12)


def test_empty_bin_uses_epsilon():
    eps = 1e-4
    psi = population_stability_index({"a": 50, "b": 50}, {"a": 100}, epsilon=eps)
    # bucket a: c=0.5, s=1.0; bucket b: c=0.5, s=eps (empty on the stable side)
    expected = (0.5 - 1.0) * math.log(0.5 / 1.0) + (0.5 - eps) * math.log(0.5 / eps)
    assert psi == pytest.approx(expected, rel=1e-12)
    assert math.isfinite(psi)


def test_psi_is_symmetric_in_its_arguments():
    a, b = {"p": 10, "q": 40, "r": 50}, {"p": 30, "q": 30, "r": 40}
    assert population_stability_index(a, b) == pytest.approx(population_stability_index(b, a))


def test_no_predictions_is_an_error_not_zero():
    with pytest.raises(ValueError, match="candidate has no predictions"):
        population_stability_index({"a": 0}, {"a": 5})
    with pytest.raises(ValueError, match="stable revision has no predictions"):
        population_stability_index({"a": 5}, {})


def test_grouping_by_output_and_drift_per_output():
    cand = histograms_by_output(
        [
            ({"output": "label", "bucket": "a"}, 30.0),
            ({"output": "label", "bucket": "b"}, 70.0),
            ({"output": "score", "bucket": "lo"}, 5.0),
            ({"output": "score", "bucket": "hi"}, float("nan")),
        ]
    )
    assert cand == {"label": {"a": 30.0, "b": 70.0}, "score": {"lo": 5.0}}
    stab = {"label": {"a": 70.0, "b": 30.0}, "score": {"lo": 9.0}, "other": {"x": 1.0}}
    drift = drift_by_output(cand, stab)
    assert set(drift) == {"label", "score"}
    assert drift["label"] == pytest.approx(0.8 * math.log(7 / 3))
    assert drift["score"] == pytest.approx(0.0)


counts = st.dictionaries(st.sampled_from("abcdef"), st.integers(0, 10**6).map(float), min_size=1).filter(
    lambda d: sum(d.values()) > 0
)


@given(counts, counts)
def test_psi_is_never_negative(candidate, stable):
    assert population_stability_index(candidate, stable) >= 0


@given(counts, st.floats(0.01, 1000))
def test_psi_ignores_volume(histogram, scale):
    scaled = {k: v * scale for k, v in histogram.items()}
    assert population_stability_index(scaled, histogram) == pytest.approx(0.0, abs=1e-9)
