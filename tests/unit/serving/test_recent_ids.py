"""The caches of recent ids (``RecentIds``, behind ``ResponseIds`` and ``CreditedIds``): what they
remember, for how long, the values they give back, and how little memory they take when full."""

from __future__ import annotations

import math
import random
import tracemalloc
from typing import Any

import pytest

from mlserving.feedback import CreditedIds, RecentIds
from mlserving.server.ids import ResponseIds


class TwoDicts:
    """The cache's contract spelled out with two generations of dicts."""

    def __init__(self, capacity: int) -> None:
        self.generation = max(1, capacity // 2)
        self.new: dict[str, Any] = {}
        self.old: dict[str, Any] = {}

    def add(self, key: str, value: Any) -> None:
        self.new[key] = value
        if len(self.new) >= self.generation:
            self.old, self.new = self.new, {}

    def get(self, key: str) -> tuple[bool, Any]:
        for generation in (self.new, self.old):
            if key in generation:
                return True, generation[key]
        return False, None


@pytest.mark.parametrize("capacity", [1, 2, 3, 10, 1000])
def test_recent_ids_know_what_two_generations_of_dicts_know(capacity: int) -> None:
    rng = random.Random(capacity)
    recent, reference = RecentIds(capacity, values=True), TwoDicts(capacity)
    pool = [f"id-{n}" for n in range(capacity * 3 + 5)]
    for step in range(capacity * 20 + 50):
        key = rng.choice(pool)  # ids come back: a client may reuse its own
        value = rng.choice([None, step, step / 7, step % 2 == 0])
        recent.add(key, value)
        reference.add(key, value)
        probe = rng.choice(pool)
        assert recent.get(probe) == reference.get(probe), (step, probe)
    for key in pool:
        assert recent.get(key) == reference.get(key)


def test_every_id_stays_known_for_half_the_capacity_and_no_more_than_the_capacity_are_known() -> None:
    recent = RecentIds(1000)
    ids = [f"iris.stable.1700000000.{n:016x}.sig" for n in range(5000)]
    for n, response_id in enumerate(ids):
        recent.add(response_id)
        assert ids[max(0, n - 499)] in recent  # added 499 ids ago, or since
    known = sum(i in recent for i in ids)
    assert 500 <= known <= 1000
    assert ids[0] not in recent and "never seen" not in recent and 17 not in recent


@pytest.mark.parametrize(
    "value",
    [None, 0.1, -0.0, math.inf, math.nan, 1e300, 3, -7, 2**53, -(2**53), 2**53 + 1, 10**30, True, False,
     "setosa", b"\x00raw", 1 + 2j, [0.1, 0.2, 0.7], [[1, 2], [3, 4]], (1, [2])],
    ids=repr,
)  # fmt: skip
def test_values_come_back_with_their_type_and_spelling(value: Any) -> None:
    recent = RecentIds(10, values=True)
    recent.add("a", value)
    known, back = recent.get("a")
    assert known is True
    assert type(back) is type(value)
    assert str(back) == str(value)  # what labelled feedback compares


def test_a_value_added_again_replaces_the_old_one() -> None:
    ids = ResponseIds(None, cache_size=100)
    ids.remember("x", 1)
    ids.remember("x", [2, 3])
    assert ids.lookup("x") == (True, [2, 3])
    ids.remember("x", None)
    assert ids.lookup("x") == (True, None)


def test_one_id_remembered_for_ever_with_new_lists_does_not_grow_the_cache() -> None:
    ids = ResponseIds(None, cache_size=100)
    tracemalloc.start()
    try:
        for n in range(20_000):
            ids.remember("the-same-id", [n, n + 1])
        size = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert ids.lookup("the-same-id") == (True, [19_999, 20_000])
    assert size < 100_000


def test_a_predicted_class_name_is_kept_once_per_generation() -> None:
    recent = RecentIds(100_000, values=True)
    tracemalloc.start()
    try:
        for n in range(20_000):
            recent.add(f"{n:024x}", "".join(["seto", "sa"]))  # a new string each time, as tolist() makes
        size = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert recent.get(f"{7:024x}") == (True, "setosa")
    assert size < 200_000


def test_credited_feedback_tells_a_reward_from_a_label() -> None:
    credited = CreditedIds(10)
    credited.add("reward:abc")
    assert "reward:abc" in credited
    assert "label:abc" not in credited and "reward:abd" not in credited and None not in credited


def test_two_processes_keep_different_digests() -> None:
    """The digest key is random: nobody can pick ids whose digests collide in a given process."""
    assert RecentIds(10).digest("abc") != RecentIds(10).digest("abc")
