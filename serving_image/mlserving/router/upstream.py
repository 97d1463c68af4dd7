"""A lean pooled HTTP/1.1 client for the router's upstream requests.

The router sends small, complete requests to a handful of known upstreams and needs the whole answer
before it replies, so a general-purpose client does far more per request than needed. This one writes
each request with a single ``write`` on a pooled keep-alive connection and parses the answer with
``httptools`` (the C parser uvicorn uses): in the benchmark (``make bench-router``) it costs a
fraction of the CPU of aiohttp, which in turn costs a fraction of httpx's.

Errors are typed so the caller can decide: ``ConnectFailed`` (refused, unreachable, connect timeout:
nothing was sent), ``Disconnected`` (the connection closed before a complete answer; ``reused`` says
whether it was a pooled keep-alive connection, the classic stale-connection race), ``RequestTimeout``
and ``BadResponse`` (not HTTP).
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

import httptools

Resolve = Callable[[str], list[str]]
"""Maps an upstream base URL to the URLs actually used (e.g. a Service to its ready endpoints)."""


class UpstreamError(Exception):
    pass


class ConnectFailed(UpstreamError):
    pass


class Disconnected(UpstreamError):
    def __init__(self, message: str, reused: bool) -> None:
        super().__init__(message)
        self.reused = reused


class RequestTimeout(UpstreamError):
    pass


class BadResponse(UpstreamError):
    pass


@dataclass(frozen=True)
class Endpoint:
    """A parsed upstream base URL."""

    url: str
    host: str
    port: int
    tls: bool
    prefix: str
    host_header: bytes
    pool_key: tuple[str, int, bool]

    @classmethod
    def parse(cls, url: str) -> Endpoint:
        parts = urlsplit(url)
        tls = parts.scheme == "https"
        host = parts.hostname or "localhost"
        port = parts.port or (443 if tls else 80)
        return cls(
            url=url,
            host=host,
            port=port,
            tls=tls,
            prefix=parts.path.rstrip("/"),
            host_header=(parts.netloc or host).encode("latin-1"),
            pool_key=(host, port, tls),
        )


class _Connection(asyncio.Protocol):
    __slots__ = (
        "_body",
        "_deadline",
        "_headers",
        "_headers_pending",
        "_timeout",
        "_timer",
        "_waiter",
        "closed",
        "head_request",
        "keep_alive",
        "loop",
        "parser",
        "status",
        "transport",
        "used",
    )

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.closed = False
        self.used = False
        self.head_request = False
        self._waiter: asyncio.Future[tuple[int, list[tuple[bytes, bytes]], bytes]] | None = None
        self._headers: list[tuple[bytes, bytes]] = []
        self._body: list[bytes] = []
        self._headers_pending = True
        self.status = 0
        self.keep_alive = True
        # The answer is due by ``_deadline`` (loop time; 0: no request in flight). One timer per
        # connection checks it, re-armed only when it fires early: no timer per request.
        self._deadline = 0.0
        self._timeout = 0.0
        self._timer: asyncio.TimerHandle | None = None

    # -- asyncio.Protocol --
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.loop = asyncio.get_running_loop()

    def data_received(self, data: bytes) -> None:
        if self._waiter is None or self._waiter.done():
            self.close()  # unsolicited bytes: the connection cannot be trusted any more
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(BadResponse("upstream switched protocols"))
        except httptools.HttpParserError as exc:
            self._fail(BadResponse(f"upstream sent an invalid HTTP response: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._cancel_timer()
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            if self.status and not self._headers_pending:
                # An answer without length, delimited by the close (HTTP/1.0 style).
                waiter.set_result((self.status, self._headers, b"".join(self._body)))
            else:
                waiter.set_exception(
                    Disconnected(f"upstream closed the connection ({exc or 'EOF'})", reused=self.used)
                )

    # -- httptools callbacks --
    def on_header(self, name: bytes, value: bytes | None) -> None:
        self._headers.append((name, value or b""))

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()
        self._headers_pending = False
        if self.head_request:
            self.keep_alive = False
            self._finish()

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        if 100 <= self.status < 200:  # an interim answer: the real one follows
            self._headers, self._body, self._headers_pending = [], [], True
            return
        self.keep_alive = self.parser.should_keep_alive()
        self._finish()

    # -- helpers --
    def _finish(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result((self.status, self._headers, b"".join(self._body)))

    def _fail(self, exc: Exception) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)
        self.close()

    def close(self) -> None:
        self.closed = True
        self._cancel_timer()
        if self.transport is not None:
            self.transport.close()

    def request_done(self) -> None:
        self._deadline = 0.0

    def _cancel_timer(self) -> None:
        timer = self._timer
        if timer is not None:
            self._timer = None
            timer.cancel()

    def _check_deadline(self) -> None:
        self._timer = None
        deadline = self._deadline
        if not deadline or self.closed:
            return  # no request in flight: the next one arms the timer again
        assert self.loop is not None
        if self.loop.time() < deadline:
            self._timer = self.loop.call_at(deadline, self._check_deadline)
            return
        self._fail(RequestTimeout(f"no complete answer within {self._timeout:g} s"))

    def send(
        self, payload: bytes, head_request: bool, timeout: float
    ) -> asyncio.Future[tuple[int, list[tuple[bytes, bytes]], bytes]]:
        """Write a request; the future returned takes the answer, or ``RequestTimeout`` after ``timeout``
        seconds (the connection is closed then)."""
        loop = self.loop
        assert self.transport is not None and loop is not None
        deadline = self._deadline = loop.time() + timeout
        self._timeout = timeout
        timer = self._timer
        if timer is None or timer.when() > deadline:
            if timer is not None:
                timer.cancel()
            self._timer = loop.call_at(deadline, self._check_deadline)
        waiter = self._waiter = loop.create_future()
        self._headers, self._body, self._headers_pending = [], [], True
        self.status, self.keep_alive, self.head_request = 0, True, head_request
        self.transport.write(payload)
        return waiter


class UpstreamPool:
    """Keep-alive connections per endpoint, most recently used first."""

    def __init__(self, max_idle_per_endpoint: int = 256) -> None:
        self.max_idle = max_idle_per_endpoint
        self._idle: dict[tuple[str, int, bool], deque[_Connection]] = {}
        self._ssl: ssl.SSLContext | None = None

    def idle_connections(self) -> int:
        return sum(1 for queue in self._idle.values() for c in queue if not c.closed)

    async def _connect(self, endpoint: Endpoint, timeout: float) -> _Connection:
        loop = asyncio.get_running_loop()
        context = None
        if endpoint.tls:
            if self._ssl is None:
                self._ssl = ssl.create_default_context()
            context = self._ssl
        try:
            async with asyncio.timeout(timeout):
                _, connection = await loop.create_connection(
                    _Connection, endpoint.host, endpoint.port, ssl=context
                )
        except TimeoutError:
            raise ConnectFailed(f"connecting to {endpoint.url} timed out after {timeout:g} s") from None
        except OSError as exc:
            raise ConnectFailed(f"cannot connect to {endpoint.url}: {exc.strerror or exc}") from None
        return connection

    async def request(
        self,
        endpoint: Endpoint,
        method: str,
        path: str,
        headers: list[tuple[bytes, bytes]],
        body: bytes,
        timeout: float,
        connect_timeout: float,
    ) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        """Send one request; return status, raw headers and the whole body."""
        key = endpoint.pool_key
        idle = self._idle.get(key)
        connection = None
        while idle:
            candidate = idle.pop()
            if not candidate.closed:
                connection = candidate
                break
        if connection is None:
            connection = await self._connect(endpoint, connect_timeout)
        lines = [
            f"{method} {endpoint.prefix}{path} HTTP/1.1\r\nhost: ".encode("latin-1"),
            endpoint.host_header,
        ]
        for name, value in headers:
            lines += (b"\r\n", name, b": ", value)
        lines.append(b"\r\ncontent-length: %d\r\n\r\n" % len(body))
        lines.append(body)
        waiter = connection.send(b"".join(lines), method == "HEAD", timeout)
        try:
            result = await waiter
        except BaseException:
            connection.close()
            raise
        finally:
            connection.request_done()
        connection.used = True
        if connection.keep_alive and not connection.closed:
            queue = self._idle.get(key)
            if queue is None:
                queue = self._idle[key] = deque()
            if len(queue) < self.max_idle:
                queue.append(connection)
            else:
                connection.close()
        else:
            connection.close()
        return result

    def close(self) -> None:
        for queue in self._idle.values():
            for connection in queue:
                connection.close()
        self._idle.clear()
