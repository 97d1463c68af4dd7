"""The PodDisruptionBudget leaves room for a node drain, or the chart refuses to render."""

from __future__ import annotations

import helm_python
import pytest
from chart_render import render


def test_budget_below_the_replica_count_renders():
    pdb = render({"replicaCount": 3, "podDisruptionBudget": {"minAvailable": 2}}).one("PodDisruptionBudget")
    assert pdb["spec"]["minAvailable"] == 2


@pytest.mark.parametrize("min_available", [2, 3])
def test_budget_of_every_replica_is_refused(min_available):
    values = {"replicaCount": 2, "podDisruptionBudget": {"minAvailable": min_available}}
    with pytest.raises(helm_python.HelmError, match=r"podDisruptionBudget.minAvailable \(\d\) must be below"):
        render(values)


def test_budget_of_every_replica_as_a_percentage_is_refused():
    values = {"replicaCount": 2, "podDisruptionBudget": {"minAvailable": "100%"}}
    with pytest.raises(helm_python.HelmError, match=r"podDisruptionBudget\.minAvailable: 100%"):
        render(values)


def test_single_replica_has_no_budget_to_check():
    rendered = render({"replicaCount": 1, "podDisruptionBudget": {"minAvailable": 5}})
    assert not rendered.of_kind("PodDisruptionBudget")
