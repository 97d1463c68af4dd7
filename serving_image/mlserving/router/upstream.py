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
import functools
import logging
import ssl
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

import httptools

log = logging.getLogger("mlserving.router")

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


Answer = tuple[int, list[tuple[bytes, bytes]], bytes]
"""An upstream's answer: status, raw headers and the whole body."""

Done = Callable[[Answer | None, UpstreamError | None], None]
"""Called once per request with the answer, or with the error that ended it."""


class _Connection(asyncio.Protocol):
    __slots__ = (
        "_body",
        "_deadline",
        "_done",
        "_headers",
        "_headers_pending",
        "_timeout",
        "_timer",
        "closed",
        "head_request",
        "keep_alive",
        "loop",
        "parser",
        "pool",
        "pool_key",
        "status",
        "transport",
        "used",
    )

    def __init__(self, pool: UpstreamPool, pool_key: tuple[str, int, bool]) -> None:
        self.transport: asyncio.Transport | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.pool = pool
        self.pool_key = pool_key
        self.closed = False
        self.used = False
        self.head_request = False
        self._done: Done | None = None
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
        if self._done is None:
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
        if self._done is not None:
            if self.status and not self._headers_pending:
                # An answer without length, delimited by the close (HTTP/1.0 style).
                self._complete((self.status, self._headers, b"".join(self._body)), None)
            else:
                error = Disconnected(f"upstream closed the connection ({exc or 'EOF'})", reused=self.used)
                self._complete(None, error)

    # -- httptools callbacks --
    def on_header(self, name: bytes, value: bytes | None) -> None:
        self._headers.append((name, value or b""))

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()
        self._headers_pending = False
        if self.head_request:
            self.keep_alive = False
            self._complete((self.status, self._headers, b""), None)

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        if 100 <= self.status < 200:  # an interim answer: the real one follows
            self._headers, self._body, self._headers_pending = [], [], True
            return
        if self._done is not None:
            self.keep_alive = self.parser.should_keep_alive()
            self._complete((self.status, self._headers, b"".join(self._body)), None)

    # -- helpers --
    def _complete(self, answer: Answer | None, error: UpstreamError | None) -> None:
        """End the request in flight: the connection goes back to its pool (or is closed), then the
        requester hears the outcome."""
        done, self._done = self._done, None
        self._deadline = 0.0
        if answer is not None:
            self.used = True
            if self.keep_alive and not self.closed:
                self.pool.release(self)
            else:
                self.close()
        else:
            self.close()
        if done is not None:
            try:
                done(answer, error)
            except Exception:  # a requester's fault must not break this connection's parsing
                log.exception("upstream answer handler failed")

    def _fail(self, exc: UpstreamError) -> None:
        self._complete(None, exc)  # closes the connection, and tells the requester when there is one

    def close(self) -> None:
        self.closed = True
        self._cancel_timer()
        if self.transport is not None:
            self.transport.close()

    def serves(self, done: Done) -> bool:
        """Whether the request in flight is the one whose outcome goes to ``done``."""
        return self._done is done

    def abort(self) -> None:
        """Give up the request in flight: nobody hears of it, and the connection is closed."""
        self._done = None
        self._deadline = 0.0
        self.close()

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

    def send(self, payload: bytes, head_request: bool, timeout: float, done: Done) -> None:
        """Write a request; ``done`` hears the answer, or ``RequestTimeout`` after ``timeout`` seconds
        (the connection is closed then)."""
        loop = self.loop
        assert self.transport is not None and loop is not None
        deadline = self._deadline = loop.time() + timeout
        self._timeout = timeout
        timer = self._timer
        if timer is None or timer.when() > deadline:
            if timer is not None:
                timer.cancel()
            self._timer = loop.call_at(deadline, self._check_deadline)
        self._done = done
        self._headers, self._body, self._headers_pending = [], [], True
        self.status, self.keep_alive, self.head_request = 0, True, head_request
        self.transport.write(payload)


def settle(future: asyncio.Future[Answer], answer: Answer | None, error: Exception | None) -> None:
    """Hand a request's outcome to ``future`` (once): its answer, or the error that ended it."""
    if future.done():
        return
    if answer is not None:
        future.set_result(answer)
    else:
        future.set_exception(error or RuntimeError("the request ended with neither an answer nor an error"))


class Pending:
    """A request under way: ``abort()`` gives it up (its ``done`` is not called then)."""

    __slots__ = ("connection", "done", "task")

    def __init__(self, done: Done) -> None:
        self.done = done
        self.connection: _Connection | None = None
        self.task: asyncio.Task[None] | None = None

    def abort(self) -> None:
        if self.task is not None and not self.task.done():
            self.task.cancel()
        connection = self.connection
        # Once answered, the connection went back to the pool and may carry another request by now.
        if connection is not None and connection.serves(self.done):
            connection.abort()


def _request_bytes(
    endpoint: Endpoint, method: str, path: str, headers: list[tuple[bytes, bytes]], body: bytes
) -> bytes:
    lines = [
        f"{method} {endpoint.prefix}{path} HTTP/1.1\r\nhost: ".encode("latin-1"),
        endpoint.host_header,
    ]
    for name, value in headers:
        lines += (b"\r\n", name, b": ", value)
    lines.append(b"\r\ncontent-length: %d\r\n\r\n" % len(body))
    lines.append(body)
    return b"".join(lines)


class UpstreamPool:
    """Keep-alive connections per endpoint, most recently used first.

    ``start`` sends a request and calls back with its outcome: on a pooled connection the request is
    written at once, with no task or future (the router's hot path); a new connection is made by a
    task first. ``request`` is the same as a coroutine.
    """

    def __init__(self, max_idle_per_endpoint: int = 256) -> None:
        self.max_idle = max_idle_per_endpoint
        self._idle: dict[tuple[str, int, bool], deque[_Connection]] = {}
        self._ssl: ssl.SSLContext | None = None
        self._connecting: set[asyncio.Task[None]] = set()

    def idle_connections(self) -> int:
        return sum(1 for queue in self._idle.values() for c in queue if not c.closed)

    def release(self, connection: _Connection) -> None:
        """A connection whose answer is complete and that stays open: kept for the next request."""
        queue = self._idle.get(connection.pool_key)
        if queue is None:
            queue = self._idle[connection.pool_key] = deque()
        if len(queue) < self.max_idle:
            queue.append(connection)
        else:
            connection.close()

    async def _connect(self, endpoint: Endpoint, timeout: float) -> _Connection:
        loop = asyncio.get_running_loop()
        context = None
        if endpoint.tls:
            if self._ssl is None:
                self._ssl = ssl.create_default_context()
            context = self._ssl
        key = endpoint.pool_key
        try:
            async with asyncio.timeout(timeout):
                _, connection = await loop.create_connection(
                    lambda: _Connection(self, key), endpoint.host, endpoint.port, ssl=context
                )
        except TimeoutError:
            raise ConnectFailed(f"connecting to {endpoint.url} timed out after {timeout:g} s") from None
        except OSError as exc:
            raise ConnectFailed(f"cannot connect to {endpoint.url}: {exc.strerror or exc}") from None
        return connection

    def start(
        self,
        endpoint: Endpoint,
        method: str,
        path: str,
        headers: list[tuple[bytes, bytes]],
        body: bytes,
        timeout: float,
        connect_timeout: float,
        done: Done,
    ) -> Pending:
        """Send one request; ``done`` is called once with the answer or the error (from a callback of
        the event loop, never from within this call)."""
        pending = Pending(done)
        payload = _request_bytes(endpoint, method, path, headers, body)
        idle = self._idle.get(endpoint.pool_key)
        while idle:
            connection = idle.pop()
            if not connection.closed:
                pending.connection = connection
                connection.send(payload, method == "HEAD", timeout, done)
                return pending
        task = asyncio.get_running_loop().create_task(
            self._connect_and_send(
                pending, endpoint, payload, method == "HEAD", timeout, connect_timeout, done
            )
        )
        pending.task = task
        self._connecting.add(task)
        task.add_done_callback(self._connecting.discard)
        return pending

    async def _connect_and_send(
        self,
        pending: Pending,
        endpoint: Endpoint,
        payload: bytes,
        head_request: bool,
        timeout: float,
        connect_timeout: float,
        done: Done,
    ) -> None:
        try:
            connection = await self._connect(endpoint, connect_timeout)
        except ConnectFailed as exc:
            done(None, exc)
            return
        pending.connection = connection
        connection.send(payload, head_request, timeout, done)

    async def request(
        self,
        endpoint: Endpoint,
        method: str,
        path: str,
        headers: list[tuple[bytes, bytes]],
        body: bytes,
        timeout: float,
        connect_timeout: float,
    ) -> Answer:
        """Send one request; return status, raw headers and the whole body."""
        future: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        done = functools.partial(settle, future)
        pending = self.start(endpoint, method, path, headers, body, timeout, connect_timeout, done)
        try:
            return await future
        except asyncio.CancelledError:
            pending.abort()
            raise

    def close(self) -> None:
        for task in list(self._connecting):
            task.cancel()
        for queue in self._idle.values():
            for connection in queue:
                connection.close()
        self._idle.clear()
