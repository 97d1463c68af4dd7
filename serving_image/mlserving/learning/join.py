"""Join logged requests with their labelled feedback, by response id, within ``max_delay`` seconds.

Memory is bounded: at most ``max_entries`` requests wait for feedback (the oldest is evicted and
counted when a new one arrives), and as many recently settled ids (joined, expired, evicted) are
remembered to tell a duplicate or late feedback from an unknown id. Nothing here raises on bad
traffic: every outcome is a value and a count. Time is an argument, so the buffer is deterministic.
"""

from __future__ import annotations

import enum
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, fields
from typing import Any

from mlserving.learning.records import JoinedRequest, LoggedRequest, RecordError


class FeedbackOutcome(enum.StrEnum):
    """What became of one feedback (the ``outcome`` label of ``mllearner_feedback_total``)."""

    JOINED = "joined"
    LATE = "late"  # its request expired (older than max_delay) or was evicted for memory
    UNKNOWN = "unknown"  # no logged request has this id
    DUPLICATE = "duplicate"  # the request already has feedback
    INVALID = "invalid"  # the label does not fit the model


class _Settled(enum.Enum):
    JOINED = "joined"
    EXPIRED = "expired"
    EVICTED = "evicted"


@dataclass
class JoinStats:
    """Counts since start; feedback outcomes by name, plus what happened to logged requests."""

    joined: int = 0
    late: int = 0
    unknown: int = 0
    duplicate: int = 0
    invalid: int = 0
    logged: int = 0  # requests accepted into the buffer
    relogged: int = 0  # requests logged again under a known id (replica retries), ignored
    expired: int = 0  # requests that waited longer than max_delay without feedback
    evicted: int = 0  # requests dropped to stay within max_entries

    def feedback_outcomes(self) -> dict[str, int]:
        return {outcome.value: getattr(self, outcome.value) for outcome in FeedbackOutcome}

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True, slots=True)
class JoinResult:
    outcome: FeedbackOutcome
    joined: JoinedRequest | None = None
    error: str = ""  # for every outcome but JOINED: what went wrong, naming the field


# Checks a feedback label against its request; returns one label per row or raises RecordError.
LabelCheck = Callable[[Any, LoggedRequest], Sequence[Any]]


class JoinBuffer:
    def __init__(self, *, max_delay: float, max_entries: int) -> None:
        if max_delay <= 0:
            raise ValueError(f"max_delay: must be positive seconds, got {max_delay}")
        if max_entries < 1:
            raise ValueError(f"max_entries: must be at least 1, got {max_entries}")
        self.max_delay = float(max_delay)
        self.max_entries = int(max_entries)
        self.stats = JoinStats()
        # Insertion order is arrival order, close to request time order: expiry pops from the front.
        self._waiting: OrderedDict[str, LoggedRequest] = OrderedDict()
        self._settled: OrderedDict[str, _Settled] = OrderedDict()

    def __len__(self) -> int:
        return len(self._waiting)

    def knows(self, response_id: str) -> bool:
        """True when the id is waiting or was recently settled (so feedback for it has an answer)."""
        return response_id in self._waiting or response_id in self._settled

    def remember_joined(self, response_ids: Iterable[str]) -> None:
        """Mark ids as already joined (rows a previous run wrote to the data log), oldest first, so
        their feedback sent again answers duplicate and their requests logged again are ignored."""
        for response_id in response_ids:
            self._waiting.pop(response_id, None)
            self._settle(response_id, _Settled.JOINED)

    def add(self, request: LoggedRequest, now: float) -> bool:
        """Keep a logged request until its feedback arrives; False when it is ignored."""
        self.expire(now)
        if request.id in self._waiting or request.id in self._settled:
            self.stats.relogged += 1
            return False
        if now - request.requested_at > self.max_delay:
            self._settle(request.id, _Settled.EXPIRED)
            self.stats.expired += 1
            return False
        while len(self._waiting) >= self.max_entries:
            evicted_id, _ = self._waiting.popitem(last=False)
            self._settle(evicted_id, _Settled.EVICTED)
            self.stats.evicted += 1
        self._waiting[request.id] = request
        self.stats.logged += 1
        return True

    def join(self, response_id: str, label: Any, now: float, check: LabelCheck) -> JoinResult:
        """Match feedback with its request; the request leaves the buffer only when the label fits."""
        self.expire(now)
        request = self._waiting.get(response_id)
        if request is None:
            return self._count(self._not_waiting(response_id))
        if now - request.requested_at > self.max_delay:
            del self._waiting[response_id]
            self._settle(response_id, _Settled.EXPIRED)
            self.stats.expired += 1
            return self._count(self._late(response_id, _Settled.EXPIRED))
        try:
            labels = tuple(check(label, request))
        except RecordError as exc:
            return self._count(JoinResult(FeedbackOutcome.INVALID, error=str(exc)))
        del self._waiting[response_id]
        self._settle(response_id, _Settled.JOINED)
        return self._count(JoinResult(FeedbackOutcome.JOINED, JoinedRequest(request, labels, now)))

    def expire(self, now: float) -> int:
        """Drop requests older than ``max_delay``; returns how many."""
        dropped = 0
        horizon = now - self.max_delay
        waiting = self._waiting
        while waiting:
            oldest_id, oldest = next(iter(waiting.items()))
            if oldest.requested_at >= horizon:
                break
            del waiting[oldest_id]
            self._settle(oldest_id, _Settled.EXPIRED)
            dropped += 1
        self.stats.expired += dropped
        return dropped

    def _not_waiting(self, response_id: str) -> JoinResult:
        settled = self._settled.get(response_id)
        if settled is _Settled.JOINED:
            return JoinResult(FeedbackOutcome.DUPLICATE, error=f"id: {response_id!r} already has feedback")
        if settled is not None:
            return self._late(response_id, settled)
        return JoinResult(
            FeedbackOutcome.UNKNOWN,
            error=f"id: {response_id!r} is unknown: no request with this id was logged (or it is forged)",
        )

    def _late(self, response_id: str, settled: _Settled) -> JoinResult:
        if settled is _Settled.EVICTED:
            why = f"more than {self.max_entries} requests were waiting for feedback and it was the oldest"
        else:
            why = f"feedback must arrive within {self.max_delay:g} s of the request"
        return JoinResult(FeedbackOutcome.LATE, error=f"id: {response_id!r} expired: {why}")

    def _count(self, result: JoinResult) -> JoinResult:
        name = result.outcome.value
        setattr(self.stats, name, getattr(self.stats, name) + 1)
        return result

    def _settle(self, response_id: str, how: _Settled) -> None:
        settled = self._settled
        settled[response_id] = how
        while len(settled) > self.max_entries:
            settled.popitem(last=False)
