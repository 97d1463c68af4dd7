"""uvicorn's httptools protocol, sending each response head and body in one write.

uvicorn writes the status line and headers as soon as the application starts the response, and
the body in a second write: two ``send()`` system calls, and two TCP segments, per response. The
head is held here until the body follows (within the same step of the event loop, as ``send_body``
always sends them together) and both go out in one write. A head without a body in the same step
(HEAD requests) is flushed on the next turn of the loop.

It also counts requests as their headers arrive (``ARRIVALS``): requests parsed in one turn of the
event loop are handled one after another in the next, and the count tells the adaptive batcher
whether others are waiting behind the one being handled.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class _OneWriteTransport:
    __slots__ = ("_head", "_loop", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._head: bytes | None = None

    def write(self, data: bytes) -> None:
        head = self._head
        if head is not None:
            self._head = None
            self._transport.write(head + data)
        elif data[:9] == b"HTTP/1.1 " and data[9:10] != b"1":  # a final response head (not 100 Continue)
            self._head = data
            self._loop.call_soon(self._flush)
        else:
            self._transport.write(data)

    def _flush(self) -> None:
        head = self._head
        if head is not None:
            self._head = None
            if not self._transport.is_closing():
                self._transport.write(head)

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class Arrivals:
    """Requests whose headers were parsed (monotonic); the application counts those it started."""

    __slots__ = ("count",)

    def __init__(self) -> None:
        self.count = 0


ARRIVALS = Arrivals()


class OneWriteHttpToolsProtocol(HttpToolsProtocol):
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.transport = _OneWriteTransport(transport, self.loop)  # type: ignore[assignment]

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        if self.cycle is not None and self.cycle.scope is self.scope:
            ARRIVALS.count += 1
