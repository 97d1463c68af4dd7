"""The feedback request both the model server and the router accept, validated in one place.

``POST /v2/models/{model}/feedback`` with ``{"id": <response id>, "reward": r}`` and/or
``"label"``. A reward is a finite number whose square is finite too, as servers and routers add
both to their ``*_reward_sum`` and ``*_reward_sum_squares`` gauges.
"""

from __future__ import annotations

import math
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


class CreditedIds:
    """The feedback a process has credited (router or model server), the most recent ``capacity``.

    Two generations of sets: the newest holds up to half the capacity; when it is full it becomes
    the old one and the previous old generation is dropped, so every key stays known for at least
    ``capacity / 2`` feedbacks. Keys are :func:`credit_key`: a reward and a label alone are two
    kinds of feedback for one response (a label may follow its reward).
    """

    def __init__(self, capacity: int) -> None:
        self._generation = max(1, capacity // 2)
        self._new: set[str] = set()
        self._old: set[str] = set()

    def __contains__(self, response_id: object) -> bool:
        return response_id in self._new or response_id in self._old

    def add(self, response_id: str) -> None:
        self._new.add(response_id)
        if len(self._new) >= self._generation:
            self._old, self._new = self._new, set()


def credit_key(feedback: Feedback) -> str:
    """What :class:`CreditedIds` remembers of a feedback: its kind (reward, or a label alone) and id."""
    return ("reward:" if feedback.reward is not None else "label:") + feedback.id
