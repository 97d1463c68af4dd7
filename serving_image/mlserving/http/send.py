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


def send_error(send: Send, error: HttpError, headers: Headers = ()) -> Awaitable[None]:
    """``{"error": message}`` with the error's status and headers, then ``headers``."""
    if error.headers or headers:
        return send_body(
            send, error.status, error_body(error.message), (*JSON_HEADERS, *error.headers, *headers)
        )
    return send_body(send, error.status, error_body(error.message))
