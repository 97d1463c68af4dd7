"""The one error type of both servers: a status (4xx/5xx) answered with ``{"error": "..."}``."""

from __future__ import annotations

from collections.abc import Sequence

import orjson

Headers = Sequence[tuple[bytes, bytes]]


class HttpError(Exception):
    """A request answered with ``status`` and ``{"error": message}`` (plus ``headers``, e.g. ``allow``)."""

    def __init__(self, status: int, message: str, headers: Headers = ()) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers


class ClientDisconnected(Exception):
    """The client closed the connection before its request body arrived: nobody is left to answer.

    Applications let it end the request quietly: no response, no error log, no request counted.
    """


def error_body(message: str) -> bytes:
    return orjson.dumps({"error": message})


def require_method(method: str, allowed: str, path: str) -> None:
    """405 unless ``method`` is ``allowed`` (``HEAD`` is accepted wherever ``GET`` is)."""
    if method == allowed or (allowed == "GET" and method == "HEAD"):
        return
    allow = b"GET, HEAD" if allowed == "GET" else allowed.encode()
    raise HttpError(405, f"{method} is not allowed on {path}; use {allowed}", ((b"allow", allow),))
