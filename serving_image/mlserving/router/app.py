"""The router as a raw ASGI application (run by uvicorn with uvloop and httptools; each response in one write).

It sits in front of model revisions and speaks the Open Inference Protocol: V2 and V1 paths are
forwarded to the variant chosen for the request over pooled keep-alive connections, health is
answered by the router itself, feedback is credited from the signed response id. The model of a
graph route (a composite model) is answered by its graph (``mlserving.router.graph``). A framework
would add per-request work on the hot path, so routing here is a handful of string operations.

Forwarding itself (``RouterApp.forward``: a ``Forward``, the ``Exchange`` with the variant that
answers the client) works in event-loop callbacks. The ASGI path awaits it; the fast lane
(``mlserving.router.fastlane``) calls it straight from the HTTP parser's callbacks for plain
inference requests, with no task per request.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import itertools
import logging
import random
import re
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import orjson

from mlserving import __version__
from mlserving.feedback import CreditedIds, credit_key, parse_feedback
from mlserving.http import (
    JSON_HEADERS,
    Application,
    ClientDisconnected,
    HttpError,
    Receive,
    Scope,
    Send,
    error_response,
    read_body,
    require_method,
    send_body,
    send_error,
    send_json,
)
from mlserving.router.agreement import predictions_agree
from mlserving.router.graph.calls import pooled_call, pooled_fetch
from mlserving.router.graph.endpoint import GraphEndpoint
from mlserving.router.graph.metadata import GraphDescriptions
from mlserving.router.graph.runtime import GraphRuntime, graph_upstreams
from mlserving.router.headers import end_to_end_headers
from mlserving.router.ids import IdSigner, InvalidId
from mlserving.router.metrics import RouterMetrics
from mlserving.router.outliers import GATEWAY_FAILURES, OutlierDetector
from mlserving.router.resolve import service_of
from mlserving.router.split import Splitter
from mlserving.router.table import Route, RouteTable, Variant

if TYPE_CHECKING:
    from mlserving.router.resolve import EndpointResolver
from mlserving.router.upstream import (
    Answer,
    ConnectFailed,
    Disconnected,
    Endpoint,
    Pending,
    RequestTimeout,
    Resolve,
    UpstreamError,
    UpstreamPool,
    settle,
)

log = logging.getLogger("mlserving.router")

VARIANT_HEADER = b"x-mlrollouts-variant"
ID_HEADER = b"x-mlrollouts-id"
DEFAULT_MAX_BODY_BYTES = 8 * 1024 * 1024
DEFAULT_MAX_SHADOW_INFLIGHT = 256
DEFAULT_CREDITED_IDS = 100_000
"""Response ids whose feedback one router remembers (about 1.4 MB), to refuse it twice."""


@dataclass(eq=False)
class CompiledVariant:
    name: str
    upstreams: tuple[Endpoint, ...]
    model: str | None
    connect_seconds: float
    request_seconds: float
    outliers: OutlierDetector
    _next: Iterable[int] = field(default_factory=itertools.count)
    header: tuple[bytes, bytes] = field(init=False)
    """The variant header of its answers."""

    def __post_init__(self) -> None:
        self.header = (VARIANT_HEADER, self.name.encode())

    def endpoints(self) -> list[Endpoint]:
        """The endpoint to try and one for the retry: the less busy of the next two in round-robin
        order that are not ejected, then another one (the same one when it is the only one)."""
        if len(self.upstreams) == 1:
            return [self.upstreams[0], self.upstreams[0]]
        return self.outliers.attempts(self.upstreams, next(self._next))  # type: ignore[call-overload]


@dataclass(eq=False)
class CompiledRoute:
    spec: Route
    name: str
    splitter: Splitter
    variants: dict[str, CompiledVariant]
    shadow: CompiledVariant | None
    shadow_fraction: float
    shadow_tolerance: float
    sticky_header: bytes | None
    sticky_cookie: bytes | None

    @classmethod
    def build(cls, route: Route, outliers: OutlierDetector, resolve: Resolve | None = None) -> CompiledRoute:
        def compile_variant(variant: Variant) -> CompiledVariant:
            timeouts = route.timeouts_for(variant)
            urls = [u for url in variant.upstreams for u in resolve(url)] if resolve else variant.upstreams
            return CompiledVariant(
                name=variant.name,
                upstreams=tuple(Endpoint.parse(url) for url in urls),
                model=variant.model,
                connect_seconds=timeouts.connect_seconds,
                request_seconds=timeouts.request_seconds,
                outliers=outliers,
            )

        variants = {v.name: compile_variant(v) for v in route.variants}
        stickiness = route.stickiness
        return cls(
            spec=route,
            name=route.name,
            splitter=Splitter([(v.name, v.weight) for v in route.variants]),
            variants=variants,
            shadow=variants[route.shadow.variant] if route.shadow else None,
            shadow_fraction=route.shadow.percent / 100.0 if route.shadow else 0.0,
            shadow_tolerance=route.shadow.relative_tolerance if route.shadow else 0.0,
            sticky_header=stickiness.header.lower().encode() if stickiness and stickiness.header else None,
            sticky_cookie=stickiness.cookie.encode() if stickiness and stickiness.cookie else None,
        )

    def sticky_key(self, headers: list[tuple[bytes, bytes]]) -> bytes | None:
        if self.sticky_header is not None:
            for name, value in headers:
                if name == self.sticky_header:
                    return value or None
            return None
        if self.sticky_cookie is not None:
            for name, value in headers:
                if name == b"cookie":
                    for part in value.split(b";"):
                        key, _, cookie_value = part.strip().partition(b"=")
                        if key == self.sticky_cookie and cookie_value:
                            return cookie_value
        return None

    def choose(self, headers: list[tuple[bytes, bytes]], uniform: float) -> CompiledVariant:
        if self.sticky_header is None and self.sticky_cookie is None:
            return self.variants[self.splitter.pick_random(uniform)]
        key = self.sticky_key(headers)
        name = self.splitter.pick_sticky(key) if key is not None else self.splitter.pick_random(uniform)
        return self.variants[name]


LaneTarget = tuple[CompiledRoute, str, str, str]
"""A route, its model name, the path's prefix and its tail: what an inference URL asks for."""

# Model names that can stand in a URL as they are (others are escaped by clients: the ASGI path).
_PLAIN_MODEL_NAME = re.compile(r"[A-Za-z0-9._~-]+")


@dataclass(eq=False)
class CompiledTable:
    table: RouteTable
    by_model: dict[str, CompiledRoute]
    lane: dict[bytes, LaneTarget]
    """The inference URLs of the routes the fast lane may take (``mlserving.router.fastlane``)."""

    @classmethod
    def build(
        cls, table: RouteTable, outliers: OutlierDetector, resolve: Resolve | None = None
    ) -> CompiledTable:
        """The routes with variants; graph routes are the ``GraphRuntime``'s."""
        routes = {r.model: CompiledRoute.build(r, outliers, resolve) for r in table.routes if r.graph is None}
        outliers.retain({e.url for r in routes.values() for v in r.variants.values() for e in v.upstreams})
        lane: dict[bytes, LaneTarget] = {}
        for model, route in routes.items():
            # A mirrored request needs the primary's answer later: the ASGI path keeps that state.
            if route.shadow is None and _PLAIN_MODEL_NAME.fullmatch(model):
                lane[f"/v2/models/{model}/infer".encode()] = (route, model, "/v2/models/", "/infer")
                lane[f"/v1/models/{model}:predict".encode()] = (route, model, "/v1/models/", ":predict")
        return cls(table=table, by_model=routes, lane=lane)


def _with_request_id(body: bytes, response_id: str) -> bytes:
    """The JSON request object with ``"id"`` set to the router's id, without parsing the body.

    The member is appended, and with duplicate names JSON parsers keep the last one, so the router's id
    wins over a client id. The upstream echoes it in its response and remembers it, which lets it accept
    the feedback the router forwards later. Bodies that are not a JSON object go through untouched.
    """
    stripped = body.rstrip()
    if not stripped.endswith(b"}") or not body.lstrip().startswith(b"{"):
        return body
    member = b'"id":' + orjson.dumps(response_id)
    inner = stripped[:-1]
    if inner.strip() == b"{":
        return b"{" + member + b"}"
    return inner + b"," + member + b"}"


Reply = Callable[[int, list[tuple[bytes, bytes]], bytes], None]
"""``reply(status, headers, body)``: the answer for the client (its headers without content-length)."""


class Exchange:
    """One request to a variant, in event-loop callbacks (no task or future on a pooled connection).

    The first attempt goes to the endpoint the variant picks; after a connection failure there is one
    retry on another endpoint of the same variant (a failed connect is retried on another endpoint
    only; a dropped connection, maybe a stale keep-alive one closed by the upstream, is retried once
    even on the same endpoint). A connect failure to a Service the resolver has yet to resolve waits
    for its endpoints and tries those. Each attempt's outcome goes to the outlier detector. ``done``
    is called once, with the answer or the ``HttpError`` for the client (502, 504)."""

    __slots__ = (
        "app",
        "body",
        "done",
        "endpoints",
        "finished",
        "headers",
        "index",
        "method",
        "open",
        "path",
        "pending",
        "route",
        "session",
        "variant",
        "waiting",
    )

    def __init__(
        self,
        app: RouterApp,
        session: UpstreamPool,
        route: CompiledRoute,
        variant: CompiledVariant,
        method: str,
        path: str,
        headers: list[tuple[bytes, bytes]],
        body: bytes,
        done: Callable[[Answer | None, HttpError | None], None] | None,
    ) -> None:
        """``done`` hears the outcome (None: a subclass takes it in ``_finish``)."""
        self.app, self.session, self.route, self.variant = app, session, route, variant
        self.method, self.path, self.headers, self.body, self.done = method, path, headers, body, done
        self.endpoints = variant.endpoints()
        self.index = 0
        self.open = False  # an attempt's outcome is due to the outlier detector
        self.finished = False
        self.pending: Pending | None = None
        self.waiting: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._attempt(0)

    def cancel(self) -> None:
        """Give up: nobody is waiting for the answer any more (``done`` is not called)."""
        if self.finished:
            return
        self.finished = True
        if self.open:
            self.open = False
            self.app.attempt_ended(self.route, self.variant, self.endpoints[self.index], None)
        if self.pending is not None:
            self.pending.abort()
        if self.waiting is not None:
            self.waiting.cancel()

    def _attempt(self, index: int) -> None:
        self.index = index
        endpoint = self.endpoints[index]
        variant = self.variant
        self.app.outliers.begin(endpoint)
        self.open = True
        self.pending = self.session.start(
            endpoint,
            self.method,
            self.path,
            self.headers,
            self.body,
            variant.request_seconds,
            variant.connect_seconds,
            self._answered,
        )

    def _answered(self, answer: Answer | None, error: UpstreamError | None) -> None:
        self.pending = None  # it holds this method: no reference cycle left for the collector
        if self.finished:
            return
        try:
            self._settle(answer, error)
        except Exception:
            log.exception("unexpected error forwarding to variant %s", self.variant.name)
            self._finish(None, HttpError(500, "internal router error (logged)"))

    def _settle(self, answer: Answer | None, error: UpstreamError | None) -> None:
        endpoint = self.endpoints[self.index]
        if answer is not None:
            ok: bool | None = answer[0] not in GATEWAY_FAILURES
        else:
            # A reused keep-alive connection closing is the pool's race, not the endpoint's failure.
            ok = None if isinstance(error, Disconnected) and error.reused else False
        self.open = False
        self.app.attempt_ended(self.route, self.variant, endpoint, ok)
        if answer is not None:
            self._finish(answer, None)
            return
        name = self.variant.name
        if isinstance(error, (ConnectFailed, Disconnected)):
            following = self.index + 1
            if following < len(self.endpoints) and (
                isinstance(error, Disconnected) or self.endpoints[following] is not endpoint
            ):
                self._count_retry()
                self._attempt(following)
            elif isinstance(error, ConnectFailed) and self.app.may_resolve_later(endpoint):
                self.waiting = asyncio.get_running_loop().create_task(self._retry_resolved(endpoint, error))
                self.app.keep(self.waiting)
            else:
                self._finish(None, self._connection_failed(error))
        elif isinstance(error, RequestTimeout):
            seconds = self.variant.request_seconds
            self._finish(
                None, HttpError(504, f"variant {name!r}: upstream did not answer within {seconds:g} s")
            )
        else:
            self._finish(None, HttpError(502, f"variant {name!r}: invalid upstream response: {error}"))

    async def _retry_resolved(self, endpoint: Endpoint, error: UpstreamError) -> None:
        fresh = await self.app.resolved_later(self.route, self.variant, endpoint)
        if self.finished:
            return
        if fresh is None:
            self._finish(None, self._connection_failed(error))
            return
        self._count_retry()
        self.variant, self.endpoints = fresh, fresh.endpoints()
        self._attempt(0)

    def _connection_failed(self, error: UpstreamError) -> HttpError:
        return HttpError(502, f"variant {self.variant.name!r}: upstream connection failed: {error}")

    def _count_retry(self) -> None:
        metrics = self.app.metrics
        metrics.count(metrics.upstream_retries, self.route.name, self.variant.name)

    def _finish(self, answer: Answer | None, error: HttpError | None) -> None:
        self.finished = True
        if self.done is not None:
            self.done(answer, error)


class Forward(Exchange):
    """A client's request to the variant chosen for it: the exchange with the variant, then the answer
    for the client (with the response id and the variant's name) counted and handed to ``reply``."""

    __slots__ = ("chosen", "primary_done", "reply", "response_id", "started")

    def __init__(
        self,
        app: RouterApp,
        route: CompiledRoute,
        variant: CompiledVariant,
        method: str,
        path: str,
        headers: list[tuple[bytes, bytes]],
        body: bytes,
        response_id: tuple[bytes, bytes] | None,
        primary_done: asyncio.Future[bytes | None] | None,
        started: float,
        reply: Reply,
    ) -> None:
        super().__init__(app, app.session, route, variant, method, path, headers, body, None)
        self.chosen = variant  # counted under it (a Service resolved late keeps its name)
        self.response_id = response_id
        self.primary_done = primary_done
        self.started = started
        self.reply = reply

    def cancel(self) -> None:
        super().cancel()
        self._primary_answered(None)

    def _finish(self, answer: Answer | None, error: HttpError | None) -> None:
        self.finished = True
        self.answered(answer, error)

    def _primary_answered(self, body: bytes | None) -> None:
        primary_done = self.primary_done
        if primary_done is not None and not primary_done.done():
            primary_done.set_result(body)

    def answered(self, answer: Answer | None, error: HttpError | None) -> None:
        variant_header = self.chosen.header
        response_id = self.response_id
        if answer is not None:
            status, raw_headers, body = answer
            ok = 200 <= status < 300
            if self.primary_done is not None:
                self._primary_answered(body if ok else None)
            try:
                if response_id is not None and ok:
                    body = _with_response_id(body, response_id[1], self.chosen.name)
            except HttpError as exc:
                error = exc
            else:
                headers = end_to_end_headers(raw_headers)
                if response_id is not None:
                    headers.append(response_id)
                headers.append(variant_header)
        else:
            self._primary_answered(None)
        if error is not None:
            status, headers, body = error_response(error, (variant_header,))
        self.app.metrics.observe_request(
            self.route.name, self.chosen.name, status, time.perf_counter() - self.started
        )
        self.reply(status, headers, body)


class RouterApp(Application):
    """ASGI app; ``set_table`` swaps the route table atomically (in-flight requests keep theirs)."""

    def __init__(
        self,
        signer: IdSigner,
        metrics: RouterMetrics | None = None,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        max_shadow_inflight: int = DEFAULT_MAX_SHADOW_INFLIGHT,
        on_startup: Callable[[RouterApp], Awaitable[None]] | None = None,
        on_shutdown: Callable[[RouterApp], Awaitable[None]] | None = None,
        resolver: EndpointResolver | None = None,
    ) -> None:
        self.signer = signer
        self.credited = CreditedIds(DEFAULT_CREDITED_IDS)
        self.resolver = resolver
        self.metrics = metrics or RouterMetrics()
        self.max_body_bytes = max_body_bytes
        self.max_shadow_inflight = max_shadow_inflight
        self._on_startup = on_startup
        self._on_shutdown = on_shutdown
        self.compiled: CompiledTable | None = None
        self.outliers = OutlierDetector()
        self.session = UpstreamPool()
        # Shadow traffic has its own pool, so a slow shadow can never hold the primaries' connections.
        self._shadow_session = UpstreamPool()
        self._shadow_tasks: set[asyncio.Task[None]] = set()
        self._background: set[asyncio.Task[None]] = set()
        resolve = resolver.resolve if resolver is not None else None
        # Graphs reach their components over the primaries' pool, resolved like the variants.
        self.graphs = GraphRuntime(
            pooled_call(self.session, connect_seconds=1.0, resolve=resolve), self.metrics.registry
        )
        self._graph_endpoint = GraphEndpoint(
            self.graphs,
            GraphDescriptions(pooled_fetch(self.session, connect_seconds=1.0, resolve=resolve)),
            signer,
            max_body_bytes,
        )
        self._random = random.Random()
        self.uniform = self._random.random
        """A uniform draw in [0, 1), for the split."""
        self._metadata = orjson.dumps(
            {"name": "mlserving-router", "version": __version__, "extensions": ["feedback"]}
        )

    # -- route table -----------------------------------------------------------------------------

    @property
    def table(self) -> RouteTable | None:
        return self.compiled.table if self.compiled else None

    def set_table(self, table: RouteTable) -> None:
        if self.resolver is not None:
            variant_urls = [url for route in table.routes for v in route.variants for url in v.upstreams]
            self.resolver.want([*variant_urls, *graph_upstreams(table)])
        self._compile(table)
        self.graphs.update(table)

    def _compile(self, table: RouteTable) -> None:
        resolve = self.resolver.resolve if self.resolver is not None else None
        self.compiled = CompiledTable.build(table, self.outliers, resolve)

    def endpoints_changed(self) -> None:
        """The resolver saw Service endpoints change: recompile the variants with them (graphs resolve
        their components on every call)."""
        if self.compiled is not None:
            self._compile(self.compiled.table)

    def _route_for(self, model: str) -> CompiledRoute:
        compiled = self.compiled
        route = compiled.by_model.get(model) if compiled else None
        if route is None:
            raise HttpError(404, f"no route for model {model!r}")
        return route

    # -- lifecycle -------------------------------------------------------------------------------

    async def startup(self) -> None:
        if self._on_startup is not None:
            await self._on_startup(self)
        # What start-up allocated (modules, the first table) lives as long as the process: kept out of
        # the collector's generations, collections during requests stay short.
        gc.collect()
        gc.freeze()

    async def shutdown(self) -> None:
        if self._on_shutdown is not None:
            await self._on_shutdown(self)
        await self.graphs.close()  # drains the result events still queued
        for task in [*self._shadow_tasks, *self._background]:
            task.cancel()
        if self._shadow_tasks:
            await asyncio.wait(self._shadow_tasks, timeout=2)
        self.session.close()
        self._shadow_session.close()

    # -- requests --------------------------------------------------------------------------------

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope["path"]
        try:
            v2 = path.startswith("/v2/models/")
            if v2 or path.startswith("/v1/models/"):
                # /v2/models/<model>/<tail> or /v1/models/<model>:<verb>
                model, separator, tail = path[11:].partition("/" if v2 else ":")
                graph = self.graphs.graph_for_model(model)
                if graph is not None:
                    answer = self._graph_endpoint.v2 if v2 else self._graph_endpoint.v1
                    await answer(scope, receive, send, graph, tail, end_to_end_headers(scope["headers"]))
                    return
                if v2 and separator and tail == "feedback":
                    await self._feedback(scope, receive, send, model)
                    return
                prefix = "/v2/models/" if v2 else "/v1/models/"
                inference = tail.endswith("infer") if v2 else tail == "predict"
                raw_tail = self._raw_tail(scope, 11 + len(model))
                await self._forward(scope, receive, send, model, prefix, raw_tail, inference)
            else:
                await self._own_endpoint(send, path)
        except HttpError as exc:
            await send_error(send, exc)
        except ClientDisconnected:
            return
        except Exception:
            log.exception("unexpected error on %s %s", scope["method"], path)
            with contextlib.suppress(Exception):  # fails harmlessly when the response already started
                await send_error(send, HttpError(500, "internal router error (logged)"))

    async def _own_endpoint(self, send: Send, path: str) -> None:
        """Health, metadata, metrics and the table in force: answered by the router itself."""
        if path == "/v2/health/live":
            await send_body(send, 200, b'{"live":true}')
        elif path == "/v2/health/ready":
            ready = self.compiled is not None
            await send_json(send, 200 if ready else 503, {"ready": ready})
        elif path in ("/v2", "/v2/"):
            await send_body(send, 200, self._metadata)
        elif path == "/metrics":
            body = self.metrics.exposition()
            await send_body(send, 200, body, [(b"content-type", self.metrics.content_type.encode())])
        elif path == "/routes":
            table = self.table
            await send_json(send, 200, table.to_dict() if table else None)
        else:
            raise HttpError(404, f"no such path: {path}")

    @staticmethod
    def _raw_tail(scope: Scope, prefix_length: int) -> str:
        """The path after the model name, percent-encoding preserved, plus the query string."""
        raw_path: bytes | None = scope.get("raw_path")
        path: str = scope["path"]
        tail = path[prefix_length:]
        if raw_path is not None:
            raw = raw_path.decode("latin-1")
            # Model names are plain, so only the tail can hold escapes; forward it as received.
            if raw != path and raw.startswith(path[:prefix_length]):
                tail = raw[prefix_length:]
        query: bytes = scope.get("query_string", b"")
        return f"{tail}?{query.decode('latin-1')}" if query else tail

    # -- forwarding ------------------------------------------------------------------------------

    def forward(
        self,
        route: CompiledRoute,
        variant: CompiledVariant,
        model: str,
        prefix: str,
        raw_tail: str,
        method: str,
        client_headers: list[tuple[bytes, bytes]],
        body: bytes,
        inference: bool,
        started: float,
        reply: Reply,
    ) -> Forward:
        """Proxy one request to ``variant`` and count it under that variant; ``reply(status, headers,
        body)`` is called once with the answer for the client (its headers without content-length).

        Inference requests get a signed response id (in the body sent upstream, the answer and a
        header), and a share of them is mirrored to the route's shadow variant."""
        headers = end_to_end_headers(client_headers)
        response_id = self.signer.issue(route.name, variant.name, time.time()) if inference else None
        id_header = None
        if response_id is not None:
            id_header = (ID_HEADER, response_id.encode())
            headers.append(id_header)
        primary_done: asyncio.Future[bytes | None] | None = None
        if inference and route.shadow is not None:
            primary_done = self._start_shadow(route, variant, method, prefix, raw_tail, headers, body)
        if response_id is not None:
            body = _with_request_id(body, response_id)
        path = f"{prefix}{variant.model or model}{raw_tail}"
        forward = Forward(
            self, route, variant, method, path, headers, body, id_header, primary_done, started, reply
        )
        forward.start()
        return forward

    async def _forward(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        model: str,
        prefix: str,
        raw_tail: str,
        inference: bool,
    ) -> None:
        """``forward`` for a request the server has handed over as ASGI (the router's fast lane takes
        the plain inference requests without it)."""
        started = time.perf_counter()
        route = self._route_for(model)
        variant = route.choose(scope["headers"], self._random.random())
        try:
            body = await read_body(scope, receive, self.max_body_bytes)
        except HttpError as exc:
            self.metrics.observe_request(route.name, variant.name, exc.status, time.perf_counter() - started)
            await send_error(send, exc, ((VARIANT_HEADER, variant.name.encode()),))
            return
        answer: asyncio.Future[tuple[int, list[tuple[bytes, bytes]], bytes]] = (
            asyncio.get_running_loop().create_future()
        )

        def reply(status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
            if not answer.done():
                answer.set_result((status, headers, body))

        forward = self.forward(
            route,
            variant,
            model,
            prefix,
            raw_tail,
            scope["method"],
            scope["headers"],
            body,
            inference,
            started,
            reply,
        )
        try:
            status, headers, response_body = await answer
        except asyncio.CancelledError:
            forward.cancel()
            raise
        await send_body(send, status, response_body, headers)

    async def _call(
        self,
        session: UpstreamPool,
        route: CompiledRoute,
        variant: CompiledVariant,
        method: str,
        path: str,
        headers: list[tuple[bytes, bytes]],
        body: bytes,
    ) -> Answer:
        """``Exchange`` as a coroutine: the answer, or its ``HttpError`` raised."""
        future: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        done = functools.partial(settle, future)
        exchange = Exchange(self, session, route, variant, method, path, headers, body, done)
        exchange.start()
        try:
            return await future
        except asyncio.CancelledError:
            exchange.cancel()
            raise

    def attempt_ended(
        self, route: CompiledRoute, variant: CompiledVariant, endpoint: Endpoint, ok: bool | None
    ) -> None:
        """One request to one endpoint ended: its outcome goes to the outlier detector (``ok`` None:
        the outcome says nothing about the endpoint, as when it was cancelled)."""
        if self.outliers.end(endpoint, ok, variant.upstreams, route.spec.outlier_detection):
            self.metrics.count(self.metrics.upstream_ejections, route.name, variant.name)
            log.warning(
                "route %s variant %s: endpoint %s ejected after failing (out: %s)",
                route.name,
                variant.name,
                endpoint.url,
                ", ".join(self.outliers.ejected(variant.upstreams)),
            )

    def may_resolve_later(self, endpoint: Endpoint) -> bool:
        """Whether a connect failure to ``endpoint`` may be a Service the resolver has yet to resolve."""
        return self.resolver is not None and service_of(endpoint.url) is not None

    def keep(self, task: asyncio.Task[None]) -> None:
        """Hold a background task of a request until it ends."""
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def resolved_later(
        self, route: CompiledRoute, variant: CompiledVariant, endpoint: Endpoint
    ) -> CompiledVariant | None:
        """After a connect failure to a Service the resolver has not resolved yet (a revision that a
        route table has just named): its endpoints, once the resolver's next polls find them."""
        if self.resolver is None or not self.may_resolve_later(endpoint):
            return None
        deadline = time.monotonic() + 2 * self.resolver.interval
        while time.monotonic() < deadline:
            await asyncio.sleep(0.02)
            current = self.compiled.by_model.get(route.spec.model) if self.compiled else None
            fresh = current.variants.get(variant.name) if current else None
            if fresh is not None and not any(service_of(e.url) for e in fresh.upstreams):
                return fresh
        return None

    # -- shadow ----------------------------------------------------------------------------------

    def _start_shadow(
        self,
        route: CompiledRoute,
        primary: CompiledVariant,
        method: str,
        prefix: str,
        raw_tail: str,
        headers: list[tuple[bytes, bytes]],
        body: bytes,
    ) -> asyncio.Future[bytes | None] | None:
        """Mirror a share of the inference requests to the shadow variant; the future returned
        takes the primary's answer, for the comparison (None: this request is not mirrored)."""
        shadow = route.shadow
        if shadow is None or shadow is primary or self._random.random() >= route.shadow_fraction:
            return None
        if len(self._shadow_tasks) >= self.max_shadow_inflight:
            self.metrics.count(self.metrics.shadow_requests, route.name, shadow.name, "dropped")
            return None
        primary_done: asyncio.Future[bytes | None] = asyncio.get_running_loop().create_future()
        path = f"{prefix}{shadow.model or route.spec.model}{raw_tail}"
        shadow_headers = [(n, v) for n, v in headers if n != ID_HEADER]
        task = asyncio.create_task(
            self._shadow(route, shadow, method, path, shadow_headers, body, primary_done)
        )
        self._shadow_tasks.add(task)
        task.add_done_callback(self._shadow_tasks.discard)
        return primary_done

    async def _shadow(
        self,
        route: CompiledRoute,
        shadow: CompiledVariant,
        method: str,
        path: str,
        headers: list[tuple[bytes, bytes]],
        body: bytes,
        primary_done: asyncio.Future[bytes | None],
    ) -> None:
        try:
            status, _, shadow_body = await self._call(
                self._shadow_session, route, shadow, method, path, headers, body
            )
        except HttpError:
            status, shadow_body = 502, b""
        except asyncio.CancelledError:
            raise
        except Exception:  # a shadow must never disturb the router
            log.exception("shadow request to %s failed", shadow.name)
            status, shadow_body = 500, b""
        ok = 200 <= status < 300
        self.metrics.count(self.metrics.shadow_requests, route.name, shadow.name, "ok" if ok else "error")
        if not ok:
            return
        primary = await primary_done
        if primary is None:
            return
        agree = predictions_agree(primary, shadow_body, route.shadow_tolerance)
        if agree is not None:
            self.metrics.count(
                self.metrics.shadow_agreement, route.name, shadow.name, "true" if agree else "false"
            )

    # -- feedback --------------------------------------------------------------------------------

    async def _feedback(self, scope: Scope, receive: Receive, send: Send, model: str) -> None:
        """Forward the feedback to the variant named by the signed id and credit it there, once.

        Feedback for an id this router has already credited (a reward, or a label alone: a label may
        follow its reward) is refused (409) without counting, and
        so is feedback the variant refuses as already kept (409 from the model server or its
        learner): a client that sends it again after a lost answer, a timeout or a router restart
        does not count twice. Otherwise the reward is credited even when the variant is not reached
        (the router's metrics are what experiments read)."""
        require_method(scope["method"], "POST", scope["path"])
        route = self._route_for(model)
        body = await read_body(scope, receive, self.max_body_bytes)
        feedback = parse_feedback(body)
        variant = self._credited_variant(route, model, feedback.id)
        key = credit_key(feedback)
        if key in self.credited:
            kind = "a reward" if feedback.reward is not None else "a label"
            raise HttpError(409, f"{kind} for response {feedback.id!r} was already counted")
        self.credited.add(key)
        upstream_status = await self._forward_feedback(route, variant, model, body)
        if upstream_status == 409:
            raise HttpError(
                409,
                f"feedback for response {feedback.id!r} was already counted (variant {variant!r} kept it)",
            )
        self.metrics.rewards.observe(feedback.reward, route.name, variant)
        answer = {
            "id": feedback.id,
            "route": route.name,
            "variant": variant,
            "forwarded": upstream_status is not None and 200 <= upstream_status < 300,
            "upstreamStatus": upstream_status,
        }
        await send_json(send, 200, answer, (*JSON_HEADERS, (VARIANT_HEADER, variant.encode())))

    def _credited_variant(self, route: CompiledRoute, model: str, response_id: str) -> str:
        try:
            credited = self.signer.verify(response_id, time.time(), route.spec.feedback.id_ttl_seconds)
        except InvalidId as exc:
            raise HttpError(exc.status, str(exc)) from None
        if credited.route != route.name:
            raise HttpError(
                400,
                f"'id' was issued for route {credited.route!r}, not for model {model!r} (route {route.name!r})",
            )
        return credited.variant

    async def _forward_feedback(
        self, route: CompiledRoute, variant_name: str, model: str, body: bytes
    ) -> int | None:
        """The serving variant's status for the forwarded feedback; None when it was not reached."""
        variant = route.variants.get(variant_name)
        if variant is None:
            return None
        path = f"/v2/models/{variant.model or model}/feedback"
        headers = [(b"content-type", b"application/json")]
        try:
            status, _, _ = await self._call(self.session, route, variant, "POST", path, headers, body)
        except HttpError as exc:
            log.warning("feedback not forwarded to variant %s: %s", variant.name, exc.message)
            return None
        return status


def _with_response_id(body: bytes, response_id: bytes, variant: str) -> bytes:
    """The upstream's answer with the router's id, when the upstream did not echo it (the protocol
    asks it to)."""
    if response_id in body:
        return body
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise HttpError(502, f"variant {variant!r} returned invalid JSON") from None
    if not isinstance(payload, dict):
        return body
    payload["id"] = response_id.decode()
    return orjson.dumps(payload)
