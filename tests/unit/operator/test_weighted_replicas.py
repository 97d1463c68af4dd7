"""The split of an autoscaled ``spec.serving.replicas`` between the stable and the candidate revision."""

from __future__ import annotations

import pytest

from mlrollouts.builders import Owner
from mlrollouts.builders.serving import serving_selector, weighted_replicas

PLANNED = {"old": 10, "new": 10}


@pytest.mark.parametrize(
    ("total", "weights", "ready", "expected"),
    [
        (10, {"old": 90, "new": 10}, 1, {"old": 9, "new": 1}),
        (10, {"old": 50, "new": 50}, 5, {"old": 5, "new": 5}),
        (4, {"old": 90, "new": 10}, 1, {"old": 4, "new": 1}),  # 3.6 rounds up: no under-sized stable
        (10, {"old": 99, "new": 1}, 1, {"old": 10, "new": 1}),  # a non-zero weight gets a pod
        (10, {"old": 0, "new": 100}, 10, {"old": 1, "new": 10}),  # the rollback target keeps one pod
        (10, {"old": 100, "new": 0}, 0, {"old": 10, "new": 1}),  # the candidate starts before its traffic
        (20, {"old": 80, "new": 20}, 4, {"old": 16, "new": 4}),  # the autoscaler doubled the total
    ],
)
def test_replicas_follow_the_weights(total, weights, ready, expected):
    split = weighted_replicas(total, weights, PLANNED, stable="old", candidate="new", candidate_ready=ready)
    assert split == expected


def test_stable_shrinks_only_as_candidate_pods_become_ready():
    weights = {"old": 50, "new": 50}
    split = [
        weighted_replicas(10, weights, PLANNED, stable="old", candidate="new", candidate_ready=ready)["old"]
        for ready in (0, 2, 5)
    ]
    assert split == [10, 8, 5]


def test_shadow_share_sizes_the_candidate_without_shrinking_the_stable():
    split = weighted_replicas(
        10,
        {"old": 100, "new": 0},
        PLANNED,
        stable="old",
        candidate="new",
        shadow=("new", 30),
        candidate_ready=3,
    )
    assert split == {"old": 10, "new": 3}


def test_without_a_candidate_and_for_scaled_down_revisions_the_plan_stands():
    planned = {"old": 0, "new": 6, "older": 3}
    assert weighted_replicas(6, {"new": 100}, planned, stable="new", candidate=None) == planned
    no_pods = {"old": 4, "new": 0}
    split = weighted_replicas(4, {"old": 100, "new": 0}, no_pods, stable="old", candidate="new")
    assert split == no_pods


def test_selector_matches_the_serving_pods_of_every_revision():
    selector = serving_selector(Owner(name="fraud", namespace="ml", uid="u"))
    assert set(selector.split(",")) == {
        "mlrollouts.io/owner=ModelDeployment.fraud",
        "app.kubernetes.io/component=serving",
    }
