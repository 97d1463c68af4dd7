"""The operator's two calls to a ModelDeployment's learner, over HTTP with a short timeout: read its
state (``GET /v1/status``) and set the pin of what replicas serve (``POST /v1/pin``).

A learner that does not answer in time is :class:`~mlrollouts.learning.Unreachable`: a pass never
waits long on it, and decides from what it knows.
"""

from __future__ import annotations

from typing import Any

import httpx

from mlrollouts.builders import Owner, learner_name
from mlrollouts.learning import LearnerReport, ReportError, Unreachable, parse_report

LEARNER_TIMEOUT = 2.0
"""Seconds one call to the learner may take."""
LEARNER_POLL_SECONDS = 1.0
"""Seconds between two looks at the learner of a ModelDeployment that learns."""


def learner_url(owner: Owner, upstream_template: str) -> str:
    """Where the operator (and the serving pods) reach the learner's Service."""
    return upstream_template.format(service=learner_name(owner), namespace=owner.namespace).rstrip("/")


def _reason(exc: Exception) -> str:
    if isinstance(exc, httpx.TimeoutException):
        return f"no answer within {LEARNER_TIMEOUT:g}s"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _error_of(response: httpx.Response) -> str:
    try:
        body: Any = response.json()
    except ValueError:
        body = None
    message = body.get("error") if isinstance(body, dict) else None
    return str(message or response.text[:200] or response.reason_phrase)


async def learner_status(base_url: str, timeout: float = LEARNER_TIMEOUT) -> LearnerReport | Unreachable:
    """The learner's report, or why there is none."""
    try:
        async with httpx.AsyncClient(timeout=timeout) as client:
            response = await client.get(f"{base_url}/v1/status")
    except httpx.HTTPError as exc:
        return Unreachable(_reason(exc))
    if response.status_code != 200:
        return Unreachable(f"GET /v1/status answered {response.status_code}: {_error_of(response)}")
    try:
        return parse_report(response.json())
    except (ValueError, ReportError) as exc:
        return Unreachable(f"GET /v1/status answered what the operator cannot read: {exc}")


async def set_pin(base_url: str, snapshot: int | None, timeout: float = LEARNER_TIMEOUT) -> str | None:
    """Ask the learner to pin serving to ``snapshot`` (None: follow the newest); returns why it did
    not, or None once it did."""
    return await _point(f"{base_url}/v1/pin", snapshot, "the pin", timeout)


async def set_candidate(base_url: str, snapshot: int | None, timeout: float = LEARNER_TIMEOUT) -> str | None:
    """Ask the learner to point the candidate-snapshot replicas at ``snapshot`` (None: at what the
    stable ones serve); returns why it did not, or None once it did."""
    return await _point(f"{base_url}/v1/candidate", snapshot, "the candidate snapshot", timeout)


async def _point(url: str, snapshot: int | None, what: str, timeout: float) -> str | None:
    try:
        async with httpx.AsyncClient(timeout=timeout) as client:
            response = await client.post(url, json={"snapshot": snapshot})
    except httpx.HTTPError as exc:
        return f"the learner does not answer ({_reason(exc)})"
    if response.status_code == 200:
        return None
    return f"the learner refused {what} ({response.status_code}): {_error_of(response)}"
