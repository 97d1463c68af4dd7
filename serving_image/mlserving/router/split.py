"""Choosing a variant: weighted random, or sticky by weighted rendezvous hashing.

Weighted rendezvous hashing: every (key, variant) pair gets a uniform number ``u`` in (0, 1) from a
keyed hash; the variant with the smallest score ``-ln(u) / weight`` wins. ``-ln(u)`` is an
exponential variable, and the minimum of independent exponentials with rates ``w_i`` falls on ``i``
with probability ``w_i / sum(w)``, so the shares match the weights exactly. A key keeps its variant
while the weights are unchanged, and when they change only the keys that must move do move.
"""

from __future__ import annotations

import bisect
import hashlib
import itertools
import math
from collections.abc import Sequence

_TWO_64 = float(2**64)


class Splitter:
    """Picks among variants with positive weight; immutable, built once per route table."""

    __slots__ = ("_cumulative", "_keys", "_names", "_total", "_weights")

    def __init__(self, weights: Sequence[tuple[str, float]]) -> None:
        active = [(name, float(weight)) for name, weight in weights if weight > 0]
        if not active:
            raise ValueError("at least one variant needs a positive weight")
        self._names = tuple(name for name, _ in active)
        self._weights = tuple(weight for _, weight in active)
        self._cumulative = tuple(itertools.accumulate(self._weights))
        self._total = self._cumulative[-1]
        # blake2b keyed by the variant name gives one independent hash family per variant.
        self._keys = tuple(name.encode()[:64] or b"-" for name in self._names)

    @property
    def names(self) -> tuple[str, ...]:
        return self._names

    def pick_random(self, uniform: float) -> str:
        """``uniform`` in [0, 1): the variant whose cumulative weight interval contains it."""
        if len(self._names) == 1:
            return self._names[0]
        index = bisect.bisect_right(self._cumulative, uniform * self._total)
        return self._names[min(index, len(self._names) - 1)]

    def pick_sticky(self, key: bytes) -> str:
        """The variant of ``key`` by weighted rendezvous hashing."""
        if len(self._names) == 1:
            return self._names[0]
        best_name = self._names[0]
        best_score = math.inf
        for name, hash_key, weight in zip(self._names, self._keys, self._weights, strict=True):
            digest = hashlib.blake2b(key, digest_size=8, key=hash_key).digest()
            # (h + 0.5) / 2^64 lies strictly inside (0, 1), so the logarithm is finite.
            uniform = (int.from_bytes(digest, "little") + 0.5) / _TWO_64
            score = -math.log(uniform) / weight
            if score < best_score:
                best_score = score
                best_name = name
        return best_name
