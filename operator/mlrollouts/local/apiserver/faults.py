"""Fault injection for the API emulator: the failures a real API server hands its clients.

A controller must converge through them, never lose a status update and never act twice on one
request. The faults, each drawn per request (resource requests only: discovery and health checks are
left alone, as a real server's are cached and rarely fail):

- ``conflict=P``: a write (PUT, PATCH) answers ``409 Conflict``, as under optimistic concurrency;
- ``throttle=P``: ``429 TooManyRequests`` with ``Retry-After`` (``retry-after=S`` seconds, default 1),
  as API priority and fairness does;
- ``error=P``: ``500 InternalError``;
- ``forbidden=P``: ``403 Forbidden`` in the words of RBAC, as for a client whose role lacks the right
  (with ``paths=`` it denies one kind of object, as a Helm chart that did not grant it);
- ``slow=P:D``: the request waits ``D`` (``0.5s``, ``500ms`` or seconds) before it is served;
- ``drop-watch=D``: every watch connection is cut without a goodbye after a random time up to ``D``,
  as a load balancer or a restarting API server does.

Options: ``agents=a|b`` (only clients whose User-Agent starts with one of these get the faults of
their requests; a test's own client stays reliable; watches are cut whoever holds them),
``paths=REGEX`` (only requests whose path it matches, e.g. ``/status$``
to hold every status write back a moment), ``for=D`` (faults only in the first ``D`` after the
server starts: the fault is then lifted, as a role granted later) and ``seed=N`` (a reproducible
run). A faulted request never reaches the
store: whatever it asked for did not happen, as the status code says.

Configured with ``mlrollouts local apiserver --faults 'conflict=0.1,throttle=0.05,error=0.05,drop-watch=30s,slow=0.1:0.5s'``
or the ``MLROLLOUTS_APISERVER_FAULTS`` environment variable (the same text).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

import aiohttp.web

ENVIRONMENT_VARIABLE = "MLROLLOUTS_APISERVER_FAULTS"
_WRITES = ("PUT", "PATCH")
_PROBABILITIES = ("conflict", "throttle", "error", "forbidden")
_ANSWERS = {
    "conflict": (
        409,
        "Conflict",
        "Operation cannot be fulfilled: the object has been modified; "
        "please apply your changes to the latest version and try again",
    ),
    "throttle": (
        429,
        "TooManyRequests",
        "the server has received too many requests and has asked us to try again later",
    ),
    "error": (500, "InternalError", "Internal error occurred: injected fault"),
    "forbidden": (403, "Forbidden", ""),  # the message names the request (see _forbidden_message)
}


class FaultSpecError(ValueError):
    """A fault specification that cannot be used; the message names the field."""


@dataclass(frozen=True)
class FaultSpec:
    conflict: float = 0.0
    throttle: float = 0.0
    error: float = 0.0
    forbidden: float = 0.0
    slow: float = 0.0
    slow_delay: float = 0.0
    drop_watch: float | None = None
    retry_after: int = 1
    agents: tuple[str, ...] = ()
    paths: str | None = None
    lasting: float | None = None
    seed: int | None = None

    def __bool__(self) -> bool:
        return bool(
            self.conflict or self.throttle or self.error or self.forbidden or self.slow or self.drop_watch
        )


def parse_duration(text: str, field: str) -> float:
    """``0.5s``, ``500ms``, ``2m`` or a bare number of seconds."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m)?\s*", text)
    if match is None:
        raise FaultSpecError(f"{field}: {text!r} is not a duration (e.g. 0.5s, 500ms, 30s)")
    value, unit = float(match.group(1)), match.group(2) or "s"
    return value * {"ms": 0.001, "s": 1.0, "m": 60.0}[unit]


def _probability(text: str, field: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise FaultSpecError(f"{field}: {text!r} is not a probability between 0 and 1") from None
    if not 0.0 <= value <= 1.0:
        raise FaultSpecError(f"{field}: {value} is not a probability between 0 and 1")
    return value


def parse_faults(text: str) -> FaultSpec:
    """Parse ``name=value`` pairs separated by commas (see the module docstring)."""
    values: dict[str, Any] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = part.partition("=")
        name = name.strip()
        if not sep:
            raise FaultSpecError(f"{name}: expected {name}=VALUE")
        if name in _PROBABILITIES:
            values[name] = _probability(value, name)
        elif name == "slow":
            chance, colon, delay = value.partition(":")
            if not colon:
                raise FaultSpecError(f"slow: expected slow=PROBABILITY:DELAY (e.g. 0.1:0.5s), got {value!r}")
            values["slow"] = _probability(chance, "slow")
            values["slow_delay"] = parse_duration(delay, "slow")
        elif name == "drop-watch":
            values["drop_watch"] = parse_duration(value, "drop-watch")
            if values["drop_watch"] <= 0:
                raise FaultSpecError("drop-watch: must be longer than 0s")
        elif name == "retry-after":
            values["retry_after"] = max(0, round(parse_duration(value, "retry-after")))
        elif name == "for":
            values["lasting"] = parse_duration(value, "for")
        elif name == "agents":
            values["agents"] = tuple(a for a in value.split("|") if a)
        elif name == "paths":
            try:
                re.compile(value)
            except re.error as exc:
                raise FaultSpecError(f"paths: {value!r} is not a regular expression: {exc}") from None
            values["paths"] = value
        elif name == "seed":
            if not value.strip().isdigit():
                raise FaultSpecError(f"seed: {value!r} is not a whole number")
            values["seed"] = int(value)
        else:
            known = ", ".join(
                (*_PROBABILITIES, "slow", "drop-watch", "retry-after", "agents", "paths", "for", "seed")
            )
            raise FaultSpecError(f"{name}: unknown fault (known: {known})")
    return FaultSpec(**values)


def _forbidden_message(entry: dict[str, Any]) -> str:
    """What RBAC answers: who may not do what to which resource (from the request's audit entry)."""
    plural = entry.get("resource", "")
    if entry.get("subresource"):
        plural = f"{plural}/{entry['subresource']}"
    name = f' "{entry["name"]}"' if entry.get("name") else ""
    user = entry.get("user") or entry.get("userAgent") or "system:anonymous"
    where = f' in the namespace "{entry["namespace"]}"' if entry.get("namespace") else " at the cluster scope"
    return (
        f'{entry.get("resource", "")}{name} is forbidden: User "{user}" cannot {entry.get("verb", "")} '
        f'resource "{plural}" in API group "{entry.get("apiGroup", "")}"{where}'
    )


def _status(code: int, reason: str, message: str) -> dict[str, Any]:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }


class FaultInjector:
    """Draws the faults of each request; ``injected`` counts them by name."""

    def __init__(self, spec: FaultSpec) -> None:
        self.spec = spec
        self.random = random.Random(spec.seed)
        self.injected: Counter[str] = Counter()
        self.started = time.monotonic()

    @classmethod
    def from_environment(cls) -> FaultInjector | None:
        text = os.environ.get(ENVIRONMENT_VARIABLE, "")
        spec = parse_faults(text) if text.strip() else FaultSpec()
        return cls(spec) if spec else None

    def _targets(self, request: Any, resource: bool) -> bool:
        if not resource:
            return False
        if self.spec.lasting is not None and time.monotonic() - self.started > self.spec.lasting:
            return False
        agent = str(request.headers.get("User-Agent", ""))
        if self.spec.paths is not None and not re.search(self.spec.paths, str(request.url.path)):
            return False
        return not self.spec.agents or agent.startswith(self.spec.agents)

    def _chance(self, probability: float) -> bool:
        return probability > 0 and self.random.random() < probability

    async def inject(self, request: Any, entry: dict[str, Any]) -> aiohttp.web.Response | None:
        """The faulted answer to ``request`` (then it is not served), or None to serve it. A watch
        is served, and cut later."""
        spec, method = self.spec, str(request.method.value)
        if entry.get("verb") == "watch":  # a cut connection does not pick its client
            if spec.drop_watch and bool(entry.get("resource")):
                self._drop_later(request, self.random.uniform(0.1, spec.drop_watch))
            return None
        if not self._targets(request, bool(entry.get("resource"))):
            return None
        if self._chance(spec.slow):
            self.injected["slow"] += 1
            entry["delayed"] = spec.slow_delay
            await asyncio.sleep(spec.slow_delay)
        name = self._draw(method)
        if name is None:
            return None
        code, reason, message = _ANSWERS[name]
        if name == "forbidden":
            message = _forbidden_message(entry)
        headers = {"Retry-After": str(spec.retry_after)} if name == "throttle" else {}
        self.injected[name] += 1
        entry.update(code=code, fault=name)
        body = json.dumps(_status(code, reason, message)).encode()
        return aiohttp.web.Response(
            body=body, status=code, headers={"Content-Type": "application/json", **headers}
        )

    def _draw(self, method: str) -> str | None:
        """Which fault answers a request (conflicts only for writes), or None."""
        if method in _WRITES and self._chance(self.spec.conflict):
            return "conflict"
        if self._chance(self.spec.throttle):
            return "throttle"
        if self._chance(self.spec.error):
            return "error"
        if self._chance(self.spec.forbidden):
            return "forbidden"
        return None

    def _drop_later(self, request: Any, delay: float) -> None:
        raw = request._raw_request
        transport = raw.transport if raw is not None else None
        if raw is None or transport is None:
            return
        watch = raw.task  # the connection may serve other requests once this watch has ended

        def drop() -> None:
            if not watch.done() and not transport.is_closing():
                self.injected["drop-watch"] += 1
                transport.abort()

        asyncio.get_running_loop().call_later(delay, drop)
