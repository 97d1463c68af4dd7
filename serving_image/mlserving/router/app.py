"""The router as a raw ASGI application (run by uvicorn with uvloop and httptools).

It sits in front of model revisions and speaks the Open Inference Protocol: V2 and V1 paths are
forwarded to the variant chosen for the request over pooled keep-alive connections, health is
answered by the router itself, feedback is credited from the signed response id. A framework would
add per-request work on the hot path, so routing here is a handful of string operations.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
import random
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

from mlserving import __version__
from mlserving.router.agreement import predictions_agree
from mlserving.router.ids import IdSigner, InvalidId
from mlserving.router.metrics import RouterMetrics
from mlserving.router.split import Splitter
from mlserving.router.table import Route, RouteTable, Variant

if TYPE_CHECKING:
    from mlserving.router.resolve import EndpointResolver
from mlserving.router.upstream import (
    BadResponse,
    ConnectFailed,
    Disconnected,
    Endpoint,
    RequestTimeout,
    UpstreamPool,
)

log = logging.getLogger("mlserving.router")

VARIANT_HEADER = b"x-mlrollouts-variant"
ID_HEADER = b"x-mlrollouts-id"
DEFAULT_MAX_BODY_BYTES = 8 * 1024 * 1024
DEFAULT_MAX_SHADOW_INFLIGHT = 256

# Hop-by-hop headers (RFC 9110 §7.6.1) and headers the router recomputes.
_HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"trailers",
        b"transfer-encoding",
        b"upgrade",
        b"host",
        b"content-length",
        b"expect",
    }
)
_JSON = [(b"content-type", b"application/json")]

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


Resolve = Callable[[str], list[str]]
"""Maps an upstream base URL to the URLs actually used (e.g. a Service to its ready endpoints)."""


class _HTTPError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class _ClientGone(Exception):
    pass


@dataclass(eq=False)
class CompiledVariant:
    name: str
    upstreams: tuple[Endpoint, ...]
    model: str | None
    connect_seconds: float
    request_seconds: float
    _next: Iterable[int] = field(default_factory=itertools.count)

    def endpoints(self) -> list[Endpoint]:
        """Endpoints in the order to try: round robin start, then one other endpoint for the retry."""
        count = len(self.upstreams)
        start = next(self._next) % count  # type: ignore[call-overload]
        if count == 1:
            return [self.upstreams[0], self.upstreams[0]]
        return [self.upstreams[start], self.upstreams[(start + 1) % count]]


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
    def build(cls, route: Route, resolve: Resolve | None = None) -> CompiledRoute:
        def compile_variant(variant: Variant) -> CompiledVariant:
            timeouts = route.timeouts_for(variant)
            urls = [u for url in variant.upstreams for u in resolve(url)] if resolve else variant.upstreams
            return CompiledVariant(
                name=variant.name,
                upstreams=tuple(Endpoint.parse(url) for url in urls),
                model=variant.model,
                connect_seconds=timeouts.connect_seconds,
                request_seconds=timeouts.request_seconds,
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
        key = self.sticky_key(headers)
        name = self.splitter.pick_sticky(key) if key is not None else self.splitter.pick_random(uniform)
        return self.variants[name]


@dataclass(eq=False)
class CompiledTable:
    table: RouteTable
    by_model: dict[str, CompiledRoute]

    @classmethod
    def build(cls, table: RouteTable, resolve: Resolve | None = None) -> CompiledTable:
        return cls(table=table, by_model={r.model: CompiledRoute.build(r, resolve) for r in table.routes})


def _json_body(payload: Any) -> bytes:
    return orjson.dumps(payload)


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


def _filter_headers(headers: Iterable[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """Drop hop-by-hop headers, including those the Connection header names."""
    headers = list(headers)
    extra: set[bytes] = set()
    for name, value in headers:
        if name.lower() == b"connection":
            extra.update(token.strip().lower() for token in value.split(b","))
    return [(n, v) for n, v in headers if n.lower() not in _HOP_BY_HOP and n.lower() not in extra]


class RouterApp:
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
        self.resolver = resolver
        self.metrics = metrics or RouterMetrics()
        self.max_body_bytes = max_body_bytes
        self.max_shadow_inflight = max_shadow_inflight
        self._on_startup = on_startup
        self._on_shutdown = on_shutdown
        self._compiled: CompiledTable | None = None
        self._session = UpstreamPool()
        # Shadow traffic has its own pool, so a slow shadow can never hold the primaries' connections.
        self._shadow_session = UpstreamPool()
        self._shadow_tasks: set[asyncio.Task[None]] = set()
        self._random = random.Random()

    # -- route table -----------------------------------------------------------------------------

    @property
    def table(self) -> RouteTable | None:
        return self._compiled.table if self._compiled else None

    def set_table(self, table: RouteTable) -> None:
        if self.resolver is not None:
            self.resolver.want(url for route in table.routes for v in route.variants for url in v.upstreams)
            self._compiled = CompiledTable.build(table, self.resolver.resolve)
        else:
            self._compiled = CompiledTable.build(table)

    def endpoints_changed(self) -> None:
        """The resolver saw Service endpoints change: recompile the current table with them."""
        if self._compiled is not None:
            self.set_table(self._compiled.table)

    # -- lifecycle -------------------------------------------------------------------------------

    async def startup(self) -> None:
        if self._on_startup is not None:
            await self._on_startup(self)

    async def shutdown(self) -> None:
        if self._on_shutdown is not None:
            await self._on_shutdown(self)
        for task in list(self._shadow_tasks):
            task.cancel()
        if self._shadow_tasks:
            await asyncio.wait(self._shadow_tasks, timeout=2)
        self._session.close()
        self._shadow_session.close()

    # -- ASGI ------------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.startup()
                except Exception as exc:
                    log.exception("router startup failed")
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _respond(
        self, send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]] | None = None
    ) -> None:
        all_headers = list(headers) if headers else []
        all_headers.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": status, "headers": all_headers})
        await send({"type": "http.response.body", "body": body})

    async def _error(self, send: Send, status: int, message: str, headers: list[Any] | None = None) -> None:
        await self._respond(send, status, _json_body({"error": message}), [*_JSON, *(headers or [])])

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope["path"]
        try:
            if path.startswith("/v2/models/"):
                model, slash, tail = path[11:].partition("/")
                if slash and tail == "feedback":
                    await self._feedback(scope, receive, send, model)
                    return
                raw_tail = self._raw_tail(scope, 11 + len(model))
                await self._forward(
                    scope, receive, send, model, "/v2/models/", raw_tail, tail.endswith("infer")
                )
            elif path.startswith("/v1/models/"):
                rest = path[11:]
                model, _, verb = rest.partition(":")
                raw_tail = self._raw_tail(scope, 11 + len(model))
                await self._forward(scope, receive, send, model, "/v1/models/", raw_tail, verb == "predict")
            elif path == "/v2/health/live":
                await self._respond(send, 200, b'{"live":true}', _JSON)
            elif path == "/v2/health/ready":
                ready = self._compiled is not None
                await self._respond(send, 200 if ready else 503, _json_body({"ready": ready}), _JSON)
            elif path in ("/v2", "/v2/"):
                metadata = {"name": "mlserving-router", "version": __version__, "extensions": ["feedback"]}
                await self._respond(send, 200, _json_body(metadata), _JSON)
            elif path == "/metrics":
                body = self.metrics.exposition()
                await self._respond(send, 200, body, [(b"content-type", self.metrics.content_type.encode())])
            elif path == "/routes":
                table = self.table
                await self._respond(send, 200, _json_body(table.to_dict() if table else None), _JSON)
            else:
                await self._error(send, 404, f"no such path: {path}")
        except _ClientGone:
            return
        except Exception:
            log.exception("unexpected error on %s %s", scope["method"], path)
            with contextlib.suppress(Exception):  # fails harmlessly when the response already started
                await self._error(send, 500, "internal router error (logged)")

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

    async def _read_body(self, scope: Scope, receive: Receive) -> bytes:
        limit = self.max_body_bytes
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    raise _HTTPError(400, "invalid Content-Length header") from None
                if declared > limit:
                    raise _HTTPError(
                        413, f"request body of {declared} bytes exceeds the limit of {limit} bytes"
                    )
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _ClientGone
        body: bytes = message.get("body", b"")
        if not message.get("more_body"):
            return body
        chunks = [body]
        size = len(body)
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise _ClientGone
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise _HTTPError(413, f"request body exceeds the limit of {limit} bytes")
            chunks.append(chunk)
            if not message.get("more_body"):
                return b"".join(chunks)

    # -- forwarding ------------------------------------------------------------------------------

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
        started = time.perf_counter()
        compiled = self._compiled
        route = compiled.by_model.get(model) if compiled else None
        if route is None:
            await self._error(send, 404, f"no route for model {model!r}")
            return
        request_headers: list[tuple[bytes, bytes]] = scope["headers"]
        variant = route.choose(request_headers, self._random.random())
        status = 500
        try:
            try:
                body = await self._read_body(scope, receive)
            except _HTTPError as exc:
                status = exc.status
                await self._error(send, exc.status, exc.message, [(VARIANT_HEADER, variant.name.encode())])
                return
            method: str = scope["method"]
            upstream_headers = _filter_headers(request_headers)
            response_id = self.signer.issue(route.name, variant.name, time.time()) if inference else None
            if response_id is not None:
                upstream_headers.append((ID_HEADER, response_id.encode()))

            primary_done: asyncio.Future[bytes | None] | None = None
            shadow = route.shadow
            if (
                inference
                and shadow is not None
                and shadow is not variant
                and self._random.random() < route.shadow_fraction
            ):
                primary_done = self._start_shadow(
                    route, shadow, method, prefix, raw_tail, upstream_headers, body
                )
            if response_id is not None:
                body = _with_request_id(body, response_id)

            response_body: bytes | None = None
            try:
                path = f"{prefix}{variant.model or model}{raw_tail}"
                status, raw_headers, response_body = await self._call(
                    self._session, route, variant, method, path, upstream_headers, body
                )
            except _HTTPError as exc:
                status = exc.status
                await self._error(send, exc.status, exc.message, [(VARIANT_HEADER, variant.name.encode())])
                return
            finally:
                if primary_done is not None and not primary_done.done():
                    primary_done.set_result(response_body if 200 <= status < 300 else None)

            headers = _filter_headers(raw_headers)
            if response_id is not None and 200 <= status < 300 and response_id.encode() not in response_body:
                # The upstream did not echo the id (the protocol asks it to): put it in the body here.
                try:
                    payload = orjson.loads(response_body)
                except orjson.JSONDecodeError:
                    status = 502
                    await self._error(
                        send,
                        502,
                        f"variant {variant.name!r} returned invalid JSON",
                        [(VARIANT_HEADER, variant.name.encode())],
                    )
                    return
                if isinstance(payload, dict):
                    payload["id"] = response_id
                    response_body = orjson.dumps(payload)
            if response_id is not None:
                headers.append((ID_HEADER, response_id.encode()))
            headers.append((VARIANT_HEADER, variant.name.encode()))
            await self._respond(send, status, response_body, headers)
        finally:
            self.metrics.observe_request(route.name, variant.name, status, time.perf_counter() - started)

    async def _call(
        self,
        session: UpstreamPool,
        route: CompiledRoute,
        variant: CompiledVariant,
        method: str,
        path: str,
        headers: list[tuple[bytes, bytes]],
        body: bytes,
    ) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        """One upstream request; one retry on another endpoint of the same variant after a connection failure."""
        endpoints = variant.endpoints()
        for attempt, endpoint in enumerate(endpoints):
            try:
                return await session.request(
                    endpoint, method, path, headers, body, variant.request_seconds, variant.connect_seconds
                )
            except (ConnectFailed, Disconnected) as exc:
                # A failed connect is retried on another endpoint only; a dropped connection (maybe a stale
                # keep-alive one closed by the upstream) is retried once, even on the same endpoint.
                retry = attempt + 1 < len(endpoints) and (
                    isinstance(exc, Disconnected) or endpoints[attempt + 1] is not endpoint
                )
                if retry:
                    self.metrics.count(self.metrics.upstream_retries, route.name, variant.name)
                    continue
                raise _HTTPError(
                    502, f"variant {variant.name!r}: upstream connection failed: {exc}"
                ) from None
            except RequestTimeout:
                raise _HTTPError(
                    504,
                    f"variant {variant.name!r}: upstream did not answer within {variant.request_seconds:g} s",
                ) from None
            except BadResponse as exc:
                raise _HTTPError(502, f"variant {variant.name!r}: invalid upstream response: {exc}") from None
        raise AssertionError("unreachable")

    # -- shadow ----------------------------------------------------------------------------------

    def _start_shadow(
        self,
        route: CompiledRoute,
        shadow: CompiledVariant,
        method: str,
        prefix: str,
        raw_tail: str,
        headers: list[tuple[bytes, bytes]],
        body: bytes,
    ) -> asyncio.Future[bytes | None] | None:
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
        except _HTTPError:
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
        if scope["method"] != "POST":
            await self._error(send, 405, "feedback must be POSTed", [(b"allow", b"POST")])
            return
        compiled = self._compiled
        route = compiled.by_model.get(model) if compiled else None
        if route is None:
            await self._error(send, 404, f"no route for model {model!r}")
            return
        try:
            body = await self._read_body(scope, receive)
            feedback = self._parse_feedback(body)
            try:
                credited = self.signer.verify(feedback["id"], time.time(), route.spec.feedback.id_ttl_seconds)
            except InvalidId as exc:
                raise _HTTPError(exc.status, str(exc)) from None
            if credited.route != route.name:
                raise _HTTPError(
                    400,
                    f"'id' was issued for route {credited.route!r}, not for model {model!r} (route {route.name!r})",
                )
        except _HTTPError as exc:
            await self._error(send, exc.status, exc.message)
            return
        self.metrics.count(self.metrics.feedback, route.name, credited.variant)
        reward = feedback.get("reward")
        if reward is not None:
            reward = float(reward)
            self.metrics.count(self.metrics.reward, route.name, credited.variant, amount=reward)
            self.metrics.count(
                self.metrics.reward_squares, route.name, credited.variant, amount=reward * reward
            )
        upstream_status: int | None = None
        variant = route.variants.get(credited.variant)
        if variant is not None:
            path = f"/v2/models/{variant.model or model}/feedback"
            try:
                upstream_status, _, _ = await self._call(
                    self._session,
                    route,
                    variant,
                    "POST",
                    path,
                    [(b"content-type", b"application/json")],
                    body,
                )
            except _HTTPError as exc:
                log.warning("feedback not forwarded to variant %s: %s", variant.name, exc.message)
        answer = {
            "id": feedback["id"],
            "route": route.name,
            "variant": credited.variant,
            "forwarded": upstream_status is not None and 200 <= upstream_status < 300,
            "upstreamStatus": upstream_status,
        }
        await self._respond(
            send, 200, _json_body(answer), [*_JSON, (VARIANT_HEADER, credited.variant.encode())]
        )

    @staticmethod
    def _parse_feedback(body: bytes) -> dict[str, Any]:
        try:
            feedback = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise _HTTPError(400, f"feedback body is not valid JSON: {exc}") from None
        if not isinstance(feedback, dict):
            raise _HTTPError(400, 'feedback body must be a JSON object like {"id": ..., "reward": 1.0}')
        if "id" not in feedback:
            raise _HTTPError(400, "feedback needs 'id': the id of the response being rated")
        if "reward" not in feedback and "label" not in feedback:
            raise _HTTPError(400, "feedback needs 'reward' and/or 'label'")
        reward = feedback.get("reward")
        if reward is not None and (
            isinstance(reward, bool) or not isinstance(reward, int | float) or not math.isfinite(reward)
        ):
            raise _HTTPError(400, "'reward' must be a finite number")
        if reward is not None and not math.isfinite(float(reward) * float(reward)):
            raise _HTTPError(400, f"'reward' {reward!r} is too large: its square must be a finite number")
        return feedback
