"""The component calls of a graph over the router's pooled upstream client.

The router passes its ``UpstreamPool`` (and its endpoint resolver, when Services are resolved to pod
addresses); the graph then reaches components over the same keep-alive connections as plain routes.
``pooled_call`` POSTs inference requests, ``pooled_fetch`` GETs metadata and readiness.
"""

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Callable, Iterator

from mlserving.http import Headers
from mlserving.router import upstream as upstream_client
from mlserving.router.graph.executor import Call, ComponentUnavailable
from mlserving.router.upstream import Endpoint, Resolve, UpstreamPool

Fetch = Callable[[str, str, float], Awaitable[tuple[int, bytes]]]
"""``fetch(upstream, path, timeout_seconds) -> (status, body)``: one GET, failures raised as ``Call``'s."""

# Resolved pod addresses change as pods come and go: the parsed endpoints are forgotten past this many.
_MAX_PARSED_ENDPOINTS = 1024


class ComponentError(Exception):
    """The component's connection broke or it did not speak HTTP (the node answers 502)."""


def pooled_call(pool: UpstreamPool, *, connect_seconds: float = 1.0, resolve: Resolve | None = None) -> Call:
    """A ``Call`` over ``pool``: round robin over the resolved endpoints, one retry like plain routes.

    A failed connect is retried once on another endpoint (never the same one); a dropped connection
    (often a pooled keep-alive connection the component just closed) is retried once.
    """
    return _requester(pool, "POST", connect_seconds, resolve)


def pooled_fetch(
    pool: UpstreamPool, *, connect_seconds: float = 1.0, resolve: Resolve | None = None
) -> Fetch:
    """A ``Fetch`` over ``pool``, with the retries of ``pooled_call``."""
    get = _requester(pool, "GET", connect_seconds, resolve)
    accept = ((b"accept", b"application/json"),)

    async def fetch(upstream: str, path: str, timeout: float) -> tuple[int, bytes]:
        status, _, body = await get(upstream, path, b"", accept, timeout)
        return status, body

    return fetch


def _requester(pool: UpstreamPool, method: str, connect_seconds: float, resolve: Resolve | None) -> Call:
    parsed: dict[str, Endpoint] = {}
    turns: dict[str, Iterator[int]] = {}

    def endpoint(url: str) -> Endpoint:
        found = parsed.get(url)
        if found is None:
            if len(parsed) >= _MAX_PARSED_ENDPOINTS:
                parsed.clear()
            found = parsed[url] = Endpoint.parse(url)
        return found

    async def call(
        upstream: str, path: str, body: bytes, headers: Headers, timeout: float
    ) -> tuple[int, Headers, bytes]:
        urls = resolve(upstream) if resolve is not None else [upstream]
        turn = turns.get(upstream)
        if turn is None:
            turn = turns[upstream] = itertools.count()
        start = next(turn) % len(urls)
        first = endpoint(urls[start])
        second = endpoint(urls[(start + 1) % len(urls)])
        try:
            return await pool.request(first, method, path, headers, body, timeout, connect_seconds)  # type: ignore[arg-type]
        except upstream_client.ConnectFailed as exc:
            if second is first:
                raise ComponentUnavailable(str(exc)) from None
        except upstream_client.Disconnected:
            pass
        except upstream_client.RequestTimeout as exc:
            raise TimeoutError(str(exc)) from None
        except upstream_client.BadResponse as exc:
            raise ComponentError(str(exc)) from None
        try:
            return await pool.request(second, method, path, headers, body, timeout, connect_seconds)  # type: ignore[arg-type]
        except upstream_client.ConnectFailed as exc:
            raise ComponentUnavailable(str(exc)) from None
        except upstream_client.RequestTimeout as exc:
            raise TimeoutError(str(exc)) from None
        except (upstream_client.Disconnected, upstream_client.BadResponse) as exc:
            raise ComponentError(str(exc)) from None

    return call
