"""The feedback request both the model server and the router accept, validated in one place.

``POST /v2/models/{model}/feedback`` with ``{"id": <response id>, "reward": r}`` and/or
``"label"``. A reward is a finite number whose square is finite too, as servers and routers add
both to their ``*_reward_sum`` and ``*_reward_sum_squares`` gauges.
"""

from __future__ import annotations

import hashlib
import math
import secrets
from array import array
from dataclasses import dataclass
from typing import Any

import orjson

from mlserving.http.errors import HttpError

MAX_ID_LENGTH = 256


@dataclass(frozen=True, slots=True)
class Feedback:
    id: str
    reward: int | float | None  # None when the feedback carries only a label
    label: Any = None
    has_label: bool = False


def parse_feedback(body: bytes) -> Feedback:
    """The feedback in a request body; a 400 ``HttpError`` naming the field when it is not valid."""
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise HttpError(400, f"malformed JSON: {exc}") from None
    if not isinstance(document, dict):
        raise HttpError(400, 'feedback must be a JSON object: {"id": ..., "reward": r} and/or "label"')
    response_id = document.get("id")
    if not isinstance(response_id, str) or not response_id or len(response_id) > MAX_ID_LENGTH:
        raise HttpError(
            400, f"'id' must be the non-empty string id of a response (at most {MAX_ID_LENGTH} characters)"
        )
    has_reward = "reward" in document
    has_label = "label" in document
    if not has_reward and not has_label:
        raise HttpError(400, "feedback needs 'reward' (a number) and/or 'label'")
    reward = document.get("reward")
    if has_reward:
        check_reward(reward)
    return Feedback(response_id, reward, document.get("label"), has_label)


def check_reward(reward: object) -> None:
    if isinstance(reward, bool) or not isinstance(reward, int | float) or not math.isfinite(reward):
        raise HttpError(400, "'reward' must be a finite number")
    if not math.isfinite(float(reward) * float(reward)):
        raise HttpError(400, f"'reward' {reward!r} is too large: its square must be a finite number")


class RecentIds:
    """The most recent ids a process has seen, each with an optional small value, in little memory.

    Two generations: the newest holds up to half the capacity; when it is full it becomes the old
    one and the previous old generation is dropped, so every id stays known for at least
    ``capacity / 2`` additions and at most ``capacity`` distinct ids are known. A generation is an
    open-addressing table (load at most 0.6) of flat arrays, not of Python objects: per slot 8 bytes
    of digest and, with ``values``, 9 bytes of value; about 14 bytes per id of the capacity, 29
    with values (a Python dict or set of texts takes 100 to 200).

    An id is kept as its 64-bit BLAKE2b digest under a random per-process key, not as text. Two
    different ids share a digest with probability 2**-64 (an unknown id taken for one of the
    ``capacity`` known ids: about 5e-15 at 100,000), which no client can steer without the key.

    Values: ``None``, a bool, a float and an int of at most 53 bits are stored in the arrays;
    anything else in a per-generation list, hashable values once per generation (a class label is
    one string however often it is predicted). Such values also count towards the generation, so
    one id added again and again with a list cannot grow memory without bound.
    """

    def __init__(self, capacity: int, *, values: bool = False) -> None:
        self._generation = max(1, capacity // 2)
        self._slots = self._generation * 5 // 3 + 1
        self._values = values
        self._key = secrets.token_bytes(16)
        self._new = _Generation(self._slots, values)
        self._old = _Generation(0, values)

    def digest(self, response_id: str) -> int:
        """The id as the table keeps it (never 0, which marks an empty slot)."""
        raw = hashlib.blake2b(response_id.encode(), digest_size=8, key=self._key).digest()
        return int.from_bytes(raw, "little") or 1

    def add(self, response_id: str, value: Any = None) -> None:
        new = self._new
        new.put(self.digest(response_id), value)
        if new.count >= self._generation or len(new.objects) >= self._generation:
            self._old = new
            self._new = _Generation(self._slots, self._values)

    def get(self, response_id: str) -> tuple[bool, Any]:
        """(known, value or None)."""
        digest = self.digest(response_id)
        for generation in (self._new, self._old):
            found, value = generation.get(digest)
            if found:
                return True, value
        return False, None

    def __contains__(self, response_id: object) -> bool:
        return isinstance(response_id, str) and self.get(response_id)[0]


_NONE, _FLOAT, _INT, _BOOL, _OBJECT = range(5)
_EXACT_INT = 2**53  # ints up to this size are exact in a double


class _Generation:
    """One generation of :class:`RecentIds`: linear probing in flat arrays, no deletion."""

    __slots__ = ("count", "digests", "kinds", "numbers", "objects", "slots", "symbols")

    def __init__(self, slots: int, values: bool) -> None:
        self.slots = slots
        self.count = 0
        self.digests = array("Q", [0]) * slots
        # a value: its kind, and the number itself or the index of the object in ``objects``
        self.kinds = array("B", [0]) * (slots if values else 0)
        self.numbers = array("d", [0.0]) * (slots if values else 0)
        self.objects: list[Any] = []
        self.symbols: dict[tuple[type, Any], int] = {}

    def _slot(self, digest: int) -> int:
        digests, slots = self.digests, self.slots
        slot = digest % slots
        while True:  # the load stays below 0.6: an empty slot is always found
            found = digests[slot]
            if found == digest or found == 0:
                return slot
            slot = slot + 1 if slot + 1 < slots else 0

    def put(self, digest: int, value: Any) -> None:
        slot = self._slot(digest)
        if self.digests[slot] == 0:
            self.digests[slot] = digest
            self.count += 1
        if not self.kinds:  # membership only
            return
        kind, number = self._encode(value)
        self.kinds[slot] = kind
        self.numbers[slot] = number

    def _encode(self, value: Any) -> tuple[int, float]:
        kind = type(value)
        if value is None:
            return _NONE, 0.0
        if kind is float:
            return _FLOAT, value
        if kind is bool:
            return _BOOL, float(value)
        if kind is int and -_EXACT_INT <= value <= _EXACT_INT:
            return _INT, float(value)
        try:
            index = self.symbols.get((kind, value))
        except TypeError:  # unhashable (a list of predictions): kept as it is
            self.objects.append(value)
            return _OBJECT, float(len(self.objects) - 1)
        if index is None:
            index = self.symbols[(kind, value)] = len(self.objects)
            self.objects.append(value)
        return _OBJECT, float(index)

    def get(self, digest: int) -> tuple[bool, Any]:
        if not self.slots:
            return False, None
        slot = self._slot(digest)
        if self.digests[slot] == 0:
            return False, None
        if not self.kinds:
            return True, None
        kind, number = self.kinds[slot], self.numbers[slot]
        if kind == _FLOAT:
            return True, number
        if kind == _INT:
            return True, int(number)
        if kind == _BOOL:
            return True, bool(number)
        if kind == _OBJECT:
            return True, self.objects[int(number)]
        return True, None


class CreditedIds:
    """The feedback a process has credited (router or model server), the most recent ``capacity``.

    Keys are :func:`credit_key`: a reward and a label alone are two kinds of feedback for one
    response (a label may follow its reward). Every key stays known for at least ``capacity / 2``
    feedbacks, as a digest in a :class:`RecentIds` (about 14 bytes per key of the capacity).
    """

    def __init__(self, capacity: int) -> None:
        self._ids = RecentIds(capacity)

    def __contains__(self, response_id: object) -> bool:
        return response_id in self._ids

    def add(self, response_id: str) -> None:
        self._ids.add(response_id)


def credit_key(feedback: Feedback) -> str:
    """What :class:`CreditedIds` remembers of a feedback: its kind (reward, or a label alone) and id."""
    return ("reward:" if feedback.reward is not None else "label:") + feedback.id
