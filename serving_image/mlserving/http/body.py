"""Reading a request body: bounded in size, and the client's disconnect reported one way."""

from __future__ import annotations

from mlserving.http.asgi import Receive, Scope
from mlserving.http.errors import ClientDisconnected, HttpError


async def read_body(scope: Scope, receive: Receive, limit: int) -> bytes:
    """The whole body, at most ``limit`` bytes (413 above, checked on ``Content-Length`` first).

    Raises ``ClientDisconnected`` when the client leaves before the body is complete.
    """
    declared = int_header(scope, b"content-length", "Content-Length")
    if declared is not None and declared > limit:
        raise HttpError(413, _too_large(limit, declared))
    message = await receive()
    if message["type"] == "http.disconnect":
        raise ClientDisconnected
    body: bytes = message.get("body", b"")
    if len(body) > limit:
        raise HttpError(413, _too_large(limit))
    if not message.get("more_body", False):
        return body
    chunks = [body]
    size = len(body)
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnected
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise HttpError(413, _too_large(limit))
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def int_header(scope: Scope, name: bytes, title: str) -> int | None:
    """The integer value of header ``name`` (lower case); None when absent, 400 when not a number."""
    for key, value in scope["headers"]:
        if key == name:
            try:
                return int(value)
            except ValueError:
                raise HttpError(400, f"{title} header is not a number") from None
    return None


def _too_large(limit: int, declared: int | None = None) -> str:
    size = "" if declared is None else f" of {declared} bytes"
    return (
        f"request body{size} exceeds the limit of {limit} bytes (--max-body-bytes); "
        "send bodies no larger than the limit"
    )
