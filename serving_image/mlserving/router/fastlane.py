"""The router's fast lane: plain inference requests forwarded in the server's protocol callbacks.

Under uvicorn every request becomes an ASGI task with its own receive and send awaitables, and the
answer from the upstream wakes that task through a future. For a proxy that does a handful of string
operations per request, that machinery is most of the CPU it spends (``make bench-router``). So the
requests that make up a model's traffic skip it: when a request's headers are parsed and it is

- ``POST /v2/models/<model>/infer`` or ``POST /v1/models/<model>:predict`` (no query, no escapes),
- for a route with variants and no shadow,
- HTTP/1.1 with a ``content-length`` within the body limit, no ``expect: 100-continue``, no upgrade,
- and no other request of the connection is still being answered (pipelining keeps its order),

its body is collected by the parser's callbacks, ``RouterApp.forward`` sends it to the chosen
variant on a pooled connection (an ``Exchange``: same split, ids, retries, timeouts, outlier
detection and metrics as any request), and the answer is written back from the upstream
connection's callback, head and body in one write. Everything else (health, metadata, feedback,
graphs, shadowed routes, chunked bodies, pipelined requests behind a fast one) goes to the ASGI
application as before. A graceful shutdown lets a fast request finish and closes its connection
after the answer, as uvicorn does for its own.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from mlserving.http import HttpError, error_response
from mlserving.http.transport import OneWriteHttpToolsProtocol

if TYPE_CHECKING:
    from uvicorn.protocols.http.httptools_impl import RequestResponseCycle

    from mlserving.router.app import LaneTarget, RouterApp

log = logging.getLogger("mlserving.router")


class _FastRequest:
    __slots__ = ("body", "keep_alive", "more", "protocol", "reading", "started", "target")

    def __init__(self, protocol: RouterProtocol, target: LaneTarget, keep_alive: bool) -> None:
        self.protocol = protocol
        self.target = target
        self.keep_alive = keep_alive
        self.started = time.perf_counter()
        self.body = b""  # its first chunk (most bodies come in one)
        self.more: list[bytes] | None = None  # the chunks after the first
        self.reading = True  # the body is still arriving

    def whole_body(self) -> bytes:
        return self.body if self.more is None else b"".join((self.body, *self.more))

    def reply(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        self.protocol.answer(self, status, headers, body)


def router_protocol(router: RouterApp) -> type[OneWriteHttpToolsProtocol]:
    """The uvicorn protocol class that serves ``router``'s plain inference requests in its fast lane
    (without the lane when this uvicorn lacks the hooks it relies on)."""
    if not fast_lane_supported():
        log.warning("this uvicorn has no per-request task hook: the fast lane is off")
        return OneWriteHttpToolsProtocol
    return type("RouterProtocol", (RouterProtocol,), {"router": router})


def fast_lane_supported() -> bool:
    """Whether uvicorn's protocol has the hooks the lane overrides (pipelined requests are queued
    through ``_start_asgi_task``)."""
    return all(
        callable(getattr(HttpToolsProtocol, hook, None))
        for hook in ("_start_asgi_task", "on_response_complete", "on_headers_complete", "shutdown")
    )


class RouterProtocol(OneWriteHttpToolsProtocol):
    router: RouterApp

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._fast: _FastRequest | None = None
        self._raw: asyncio.Transport | None = None
        self._idle_since = 0.0  # loop time of the last answer while no request is under way; 0: busy

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._raw = transport  # the fast lane writes whole responses: no head held back for its body
        super().connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        timer, self.timeout_keep_alive_task = self.timeout_keep_alive_task, None
        if timer is not None:
            timer.cancel()

    # -- parser callbacks ------------------------------------------------------------------------

    def on_message_begin(self) -> None:
        # The ASGI scope is made only for a request the fast lane does not take.
        self.url = b""
        self.expect_100_continue = False
        self.headers = []

    def on_headers_complete(self) -> None:
        fast = self._fast_request()
        if fast is not None:
            self._fast = fast
            return
        url, headers, expect_100_continue = self.url, self.headers, self.expect_100_continue
        super().on_message_begin()
        self.url, self.headers, self.expect_100_continue = url, headers, expect_100_continue
        self.scope["headers"] = headers
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        fast = self._fast
        if fast is not None and fast.reading:
            if not fast.body:
                fast.body = body
            elif fast.more is None:
                fast.more = [body]
            else:
                fast.more.append(body)
        else:
            super().on_body(body)

    def on_message_complete(self) -> None:
        fast = self._fast
        if fast is not None and fast.reading:
            fast.reading = False
            self._dispatch(fast)
        else:
            super().on_message_complete()

    # -- uvicorn hooks -----------------------------------------------------------------------------

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: Any) -> None:
        if self._fast is not None:
            # A request pipelined behind a fast one waits for its answer, as behind any other.
            self.flow.pause_reading()
            self.pipeline.appendleft((cycle, app))
            return
        super()._start_asgi_task(cycle, app)

    def on_response_complete(self) -> None:
        """uvicorn's, with one keep-alive timer per connection instead of one per answer: it is
        re-armed when it fires early, and a request arriving only marks the connection busy."""
        self.server_state.total_requests += 1
        if self._raw is None or self._raw.is_closing():
            return
        if self.flow.read_paused:
            self.flow.resume_reading()
        if self.pipeline:
            cycle, app = self.pipeline.pop()
            self._start_asgi_task(cycle, app)
            return
        self._idle_since = self.loop.time()
        if self.timeout_keep_alive_task is None:
            self.timeout_keep_alive_task = self.loop.call_at(
                self._idle_since + self.timeout_keep_alive, self._check_keep_alive
            )

    def _unset_keepalive_if_required(self) -> None:
        self._idle_since = 0.0

    def _check_keep_alive(self) -> None:
        self.timeout_keep_alive_task = None
        idle_since = self._idle_since
        if not idle_since:
            return  # a request is under way: its answer arms the timer again
        due = idle_since + self.timeout_keep_alive
        if self.loop.time() < due:
            self.timeout_keep_alive_task = self.loop.call_at(due, self._check_keep_alive)
        else:
            self.timeout_keep_alive_handler()

    def shutdown(self) -> None:
        fast = self._fast
        if fast is not None:
            fast.keep_alive = False  # answer it, then close
        else:
            super().shutdown()

    # -- the lane ----------------------------------------------------------------------------------

    def _fast_request(self) -> _FastRequest | None:
        """The request whose headers were just parsed, when the fast lane can take it."""
        if self._fast is not None or self.expect_100_continue or self.limit_concurrency is not None:
            return None
        compiled = self.router.compiled
        target = compiled.lane.get(self.url) if compiled is not None else None
        if target is None:
            return None
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            return None
        parser = self.parser
        if parser.get_method() != b"POST" or parser.get_http_version() != "1.1" or parser.should_upgrade():
            return None
        length = -1
        for header, value in self.headers:
            if header == b"content-length":
                if length >= 0 or not value.isdigit():
                    return None
                length = int(value)
            elif header == b"transfer-encoding":
                return None
        if length < 0 or length > self.router.max_body_bytes:
            return None
        return _FastRequest(self, target, parser.should_keep_alive())

    def _dispatch(self, fast: _FastRequest) -> None:
        router = self.router
        route, model, prefix, tail = target = fast.target
        try:
            variant = route.choose(self.headers, router.uniform())
            router.forward(
                route,
                variant,
                model,
                prefix,
                tail,
                "POST",
                self.headers,
                fast.whole_body(),
                True,
                fast.started,
                fast.reply,
            )
        except Exception:
            log.exception("unexpected error on POST %s%s%s", *target[1:])
            self.answer(fast, *error_response(HttpError(500, "internal router error (logged)")))

    def answer(
        self, fast: _FastRequest, status: int, headers: list[tuple[bytes, bytes]], body: bytes
    ) -> None:
        """Write the answer to the fast request in one write, then serve the connection's next one.

        Its headers are the router's own and those the upstream sent, which the response parser
        (llhttp, strict) has checked: none holds a character uvicorn would refuse to write."""
        if self._fast is not fast:
            return  # already answered
        self._fast = None
        transport = self._raw
        if transport is None or transport.is_closing():
            return  # the client has gone
        content = [STATUS_LINE[status]]
        for name, value in headers:
            content += (name.lower(), b": ", value, b"\r\n")
        content.append(b"content-length: %d\r\n" % len(body))
        if not fast.keep_alive:
            content.append(b"connection: close\r\n")
        content += (b"\r\n", body)
        transport.write(b"".join(content))
        if not fast.keep_alive:
            transport.close()
        self.on_response_complete()
