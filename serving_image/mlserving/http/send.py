"""Sending a whole response: head and body, with ``content-length``; JSON by default."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any

import orjson

from mlserving.http.asgi import Send
from mlserving.http.errors import Headers, HttpError, error_body

JSON_HEADERS: Headers = ((b"content-type", b"application/json"),)


async def send_body(send: Send, status: int, body: bytes, headers: Headers = JSON_HEADERS) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [*headers, (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


# The helpers below return send_body's coroutine instead of awaiting it: one coroutine less per response.


def send_json(send: Send, status: int, document: Any, headers: Headers = JSON_HEADERS) -> Awaitable[None]:
    return send_body(send, status, orjson.dumps(document), headers)


def error_response(error: HttpError, headers: Headers = ()) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """Status, headers and body of the answer to ``error``: ``{"error": message}`` with the error's
    status and headers, then ``headers`` (for writers that are not an ASGI ``send``)."""
    return error.status, [*JSON_HEADERS, *error.headers, *headers], error_body(error.message)


def send_error(send: Send, error: HttpError, headers: Headers = ()) -> Awaitable[None]:
    """``{"error": message}`` with the error's status and headers, then ``headers``."""
    status, all_headers, body = error_response(error, headers)
    return send_body(send, status, body, all_headers)
