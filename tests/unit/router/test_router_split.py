"""Weighted random and sticky (weighted rendezvous) assignment honour the weights."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from mlserving.router.split import Splitter

KEYS = 200_000


def shares(splitter: Splitter, picks) -> dict[str, float]:
    counts = Counter(picks)
    total = sum(counts.values())
    return {name: counts[name] / total for name in splitter.names}


@pytest.mark.parametrize("weights", [{"a": 90, "b": 10}, {"a": 70, "b": 20, "c": 10}])
def test_sticky_shares_match_weights_over_200k_keys(weights):
    splitter = Splitter(list(weights.items()))
    observed = shares(splitter, (splitter.pick_sticky(f"user-{i}".encode()) for i in range(KEYS)))
    total = sum(weights.values())
    for name, weight in weights.items():
        assert observed[name] == pytest.approx(weight / total, abs=0.005), observed


@pytest.mark.parametrize("weights", [{"a": 90, "b": 10}, {"a": 70, "b": 20, "c": 10}])
def test_random_shares_match_weights(weights):
    splitter = Splitter(list(weights.items()))
    rng = random.Random(7)
    observed = shares(splitter, (splitter.pick_random(rng.random()) for _ in range(KEYS)))
    total = sum(weights.values())
    for name, weight in weights.items():
        assert observed[name] == pytest.approx(weight / total, abs=0.005), observed


def test_sticky_keys_keep_their_variant_while_weights_are_unchanged():
    first = Splitter([("a", 50), ("b", 30), ("c", 20)])
    again = Splitter([("c", 20), ("a", 50), ("b", 30)])  # order does not matter
    keys = [f"k{i}".encode() for i in range(20_000)]
    assert [first.pick_sticky(k) for k in keys] == [again.pick_sticky(k) for k in keys]


def test_weight_change_moves_only_the_keys_that_must_move():
    keys = [f"k{i}".encode() for i in range(50_000)]
    before = Splitter([("stable", 90), ("canary", 10)])
    after = Splitter([("stable", 70), ("canary", 30)])
    moved = [(before.pick_sticky(k), after.pick_sticky(k)) for k in keys]
    # Growing the canary only pulls keys from stable into canary; none goes the other way.
    assert not any(b == "canary" and a == "stable" for b, a in moved)
    share_moved = sum(b != a for b, a in moved) / len(keys)
    assert share_moved == pytest.approx(0.20, abs=0.01)  # the minimum: 30 % - 10 %


def test_adding_a_variant_only_takes_its_share():
    keys = [f"k{i}".encode() for i in range(50_000)]
    before = Splitter([("a", 50), ("b", 50)])
    after = Splitter([("a", 50), ("b", 50), ("c", 25)])
    moved = [(before.pick_sticky(k), after.pick_sticky(k)) for k in keys]
    assert all(a in (b, "c") for b, a in moved)
    assert sum(a == "c" for _, a in moved) / len(keys) == pytest.approx(0.2, abs=0.01)


def test_zero_weight_variants_are_never_chosen_and_all_zero_is_refused():
    splitter = Splitter([("a", 1), ("shadow", 0)])
    assert {splitter.pick_sticky(f"{i}".encode()) for i in range(1000)} == {"a"}
    assert splitter.pick_random(0.999999) == "a"
    with pytest.raises(ValueError, match="positive weight"):
        Splitter([("a", 0), ("b", 0)])
