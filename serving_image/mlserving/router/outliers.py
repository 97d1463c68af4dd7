"""Outlier detection: endpoints of a variant that keep failing leave its rotation for a while.

A hung model server (stopped, deadlocked, swapping) still accepts connections, so every request sent to
it waits for the whole upstream timeout. Two things keep such an endpoint from dragging a variant's
latency down, the way Envoy's outlier detection and least-request balancing do:

- the first attempt goes to the less busy of two endpoints taken in round-robin order, so requests
  piling up on a hung endpoint steer new ones to the others before any timeout fires;
- ``consecutiveFailures`` gateway failures in a row (connect failure, timeout, dropped connection,
  invalid answer, 502/503/504) eject the endpoint for ``baseEjectionSeconds`` times the number of its
  ejections so far (at most ``maxEjectionSeconds``). When that time is up it is on probation: it gets
  one request at a time until one succeeds (back in rotation) or fails (ejected again, for longer).

At most ``maxEjectedPercent`` of a variant's endpoints are out at once (always one of two or more; a
variant with one endpoint keeps it: there is nowhere else to send its traffic, and its errors must reach
the analysis). Failures are answered to the client and counted as usual: ejection bounds how many.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from mlserving.router.upstream import Endpoint

GATEWAY_FAILURES = frozenset({502, 503, 504})
"""Upstream answers that say the endpoint cannot serve, rather than that the request was wrong."""


class EjectionPolicy(Protocol):
    @property
    def consecutive_failures(self) -> int: ...
    @property
    def base_ejection_seconds(self) -> float: ...
    @property
    def max_ejection_seconds(self) -> float: ...
    @property
    def max_ejected_percent(self) -> float: ...


@dataclass(slots=True)
class EndpointState:
    in_flight: int = 0
    failures: int = 0  # gateway failures in a row
    ejections: int = 0  # ejections since it last served a request
    ejected_until: float = 0.0  # 0: in rotation; else out until then, on probation afterwards
    probing: bool = False  # the one request of its probation is in flight


@dataclass
class OutlierDetector:
    """Per-endpoint health shared by every route and variant that names the endpoint."""

    clock: Callable[[], float] = time.monotonic
    _states: dict[str, EndpointState] = field(default_factory=dict)

    def state(self, endpoint: Endpoint) -> EndpointState:
        state = self._states.get(endpoint.url)
        if state is None:
            state = self._states[endpoint.url] = EndpointState()
        return state

    def attempts(self, upstreams: Sequence[Endpoint], start: int) -> list[Endpoint]:
        """The endpoint to try first and the one for a retry, among two or more ``upstreams``."""
        count = len(upstreams)
        rotated = [upstreams[(start + i) % count] for i in range(count)]
        now = self.clock()
        usable = [e for e in rotated if self._usable(self.state(e), now)] or rotated
        first = usable[0]
        if len(usable) > 1 and self.state(usable[1]).in_flight < self.state(first).in_flight:
            first = usable[1]
        state = self.state(first)
        if state.ejected_until:
            state.probing = True
        retry = next((e for e in usable if e is not first), None)
        return [first, retry or next(e for e in rotated if e is not first)]

    @staticmethod
    def _usable(state: EndpointState, now: float) -> bool:
        return not state.ejected_until or (now >= state.ejected_until and not state.probing)

    def begin(self, endpoint: Endpoint) -> None:
        self.state(endpoint).in_flight += 1

    def end(
        self, endpoint: Endpoint, ok: bool | None, upstreams: Sequence[Endpoint], policy: EjectionPolicy
    ) -> bool:
        """Record how a request ended (``None``: nothing the endpoint did); True when it is ejected now."""
        state = self.state(endpoint)
        state.in_flight -= 1
        if ok is None:
            if state.probing:
                state.probing = False
            return False
        if ok:
            state.failures, state.ejections, state.ejected_until, state.probing = 0, 0, 0.0, False
            return False
        state.failures += 1
        on_probation = state.probing
        state.probing = False
        now = self.clock()
        if state.ejected_until > now:  # already out (requests sent before the ejection)
            return False
        if not on_probation and state.failures < policy.consecutive_failures:
            return False
        if not on_probation and not self._may_eject(endpoint, upstreams, policy, now):
            return False
        state.ejections += 1
        seconds = min(policy.base_ejection_seconds * state.ejections, policy.max_ejection_seconds)
        state.ejected_until = now + seconds
        return True

    def _may_eject(
        self, endpoint: Endpoint, upstreams: Sequence[Endpoint], policy: EjectionPolicy, now: float
    ) -> bool:
        if len(upstreams) < 2 or policy.max_ejected_percent <= 0:
            return False
        allowed = max(1, math.floor(len(upstreams) * policy.max_ejected_percent / 100))
        out = sum(
            1
            for e in upstreams
            if e.url != endpoint.url and (s := self._states.get(e.url)) and s.ejected_until > now
        )
        return out < allowed

    def ejected(self, upstreams: Sequence[Endpoint]) -> list[str]:
        """The URLs of ``upstreams`` out of rotation now."""
        now = self.clock()
        return [e.url for e in upstreams if (s := self._states.get(e.url)) and s.ejected_until > now]

    def retain(self, urls: Collection[str]) -> None:
        """Forget endpoints no route names any more (pods replaced), keeping those with requests in flight."""
        for url in [u for u, s in self._states.items() if u not in urls and not s.in_flight]:
            del self._states[url]
