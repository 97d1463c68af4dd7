"""The model server's caches of recent response ids and of credited feedback stay small when full
(they are kept for the whole life of a server: their fullest size is RSS that never goes away)."""

from __future__ import annotations

import tracemalloc

from mlserving.feedback import CreditedIds
from mlserving.server.ids import ResponseIds


def test_a_full_response_id_cache_takes_a_few_megabytes() -> None:
    """100,000 ids as a router sends them, each with a float prediction: under 3.5 MB at the fullest
    (two generations of dicts of texts and floats took about 15 MB)."""
    tracemalloc.start()
    try:
        ids = ResponseIds(None, cache_size=100_000)
        for n in range(250_000):
            ids.remember(f"iris.stable.1700000000.{n:016x}.q1w2e3r4t5y6u7i8o9p0as", n / 7)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert ids.lookup(f"iris.stable.1700000000.{249_999:016x}.q1w2e3r4t5y6u7i8o9p0as") == (True, 249_999 / 7)
    assert peak < 3.5e6, f"{peak / 1e6:.1f} MB"


def test_a_full_credited_feedback_cache_takes_well_under_a_megabyte() -> None:
    tracemalloc.start()
    try:
        credited = CreditedIds(20_000)
        for n in range(50_000):
            credited.add(f"reward:iris.stable.1700000000.{n:016x}.q1w2e3r4t5y6u7i8o9p0as")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 400_000, f"{peak / 1e6:.2f} MB"
