"""Real HTTP servers on loopback ports (aiohttp, in the test's event loop): an event sink and model components."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes


@dataclass
class Sink:
    """Records every POST; answers ``statuses`` in order (then 200), each after ``delay`` seconds."""

    delay: float = 0.0
    statuses: list[int] = field(default_factory=list)
    received: list[Received] = field(default_factory=list)
    url: str = ""
    _runner: web.AppRunner | None = None

    async def _handle(self, request: web.Request) -> web.Response:
        self.received.append(
            Received({k.lower(): v for k, v in request.headers.items()}, await request.read())
        )
        if self.delay:
            await asyncio.sleep(self.delay)
        return web.Response(status=self.statuses.pop(0) if self.statuses else 200)

    async def start(self, path: str = "/events") -> Sink:
        app = web.Application()
        app.router.add_post(path, self._handle)
        self._runner, port = await _serve(app)
        self.url = f"http://127.0.0.1:{port}{path}"
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


Predict = Callable[[list[dict[str, Any]]], list[dict[str, Any]]]


@dataclass
class ModelServer:
    """A minimal V2 inference endpoint for one model, answering with ``predict`` and a variant header."""

    model: str
    predict: Predict
    variant: str = "stable"
    delay: float = 0.0
    metadata: dict[str, Any] | None = None  # answered on GET /v2/models/{model}
    ready: bool = True
    requests: list[dict[str, Any]] = field(default_factory=list)
    url: str = ""
    _runner: web.AppRunner | None = None

    async def _infer(self, request: web.Request) -> web.Response:
        if request.match_info["model"] != self.model:
            return web.json_response({"error": f"no model {request.match_info['model']!r}"}, status=404)
        body = orjson.loads(await request.read())
        self.requests.append({"body": body, "headers": dict(request.headers)})
        if self.delay:
            await asyncio.sleep(self.delay)
        answer = {
            "model_name": self.model,
            "id": f"{self.model}-{len(self.requests)}",
            "outputs": self.predict(body["inputs"]),
        }
        return web.Response(
            body=orjson.dumps(answer),
            content_type="application/json",
            headers={"x-mlrollouts-variant": self.variant},
        )

    async def _metadata(self, request: web.Request) -> web.Response:
        if request.match_info["model"] != self.model or self.metadata is None:
            return web.json_response({"error": f"no model {request.match_info['model']!r}"}, status=404)
        return web.json_response(self.metadata)

    async def _ready(self, request: web.Request) -> web.Response:
        return web.json_response({"name": self.model, "ready": self.ready}, status=200 if self.ready else 503)

    async def start(self) -> ModelServer:
        app = web.Application()
        app.router.add_post("/v2/models/{model}/infer", self._infer)
        app.router.add_get("/v2/models/{model}", self._metadata)
        app.router.add_get("/v2/models/{model}/ready", self._ready)
        self._runner, port = await _serve(app)
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


async def _serve(app: web.Application) -> tuple[web.AppRunner, int]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    listening = socket.socket()
    listening.bind(("127.0.0.1", 0))
    await web.SockSite(runner, listening).start()
    return runner, listening.getsockname()[1]


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
