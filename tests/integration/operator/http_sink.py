"""A tiny HTTP endpoint (aiohttp, on its own thread and loop) that records what the operator sends it:
a notification sink, or a rollout hook that answers with a chosen status per path."""

from __future__ import annotations

import asyncio
import json
import threading
from typing import Any

from aiohttp import web


class HttpSink:
    def __init__(self, statuses: dict[str, int] | None = None) -> None:
        self.statuses = dict(statuses or {})
        """Status answered per path (default 200)."""
        self.received: list[tuple[str, dict[str, str], Any]] = []
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="http-sink", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise AssertionError("HTTP sink did not start")

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        app = web.Application()
        app.router.add_route("*", "/{path:.*}", self._handle)
        self._runner = web.AppRunner(app)
        self._loop.run_until_complete(self._runner.setup())
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        self._loop.run_until_complete(site.start())
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self._ready.set()
        self._loop.run_forever()

    async def _handle(self, request: web.Request) -> web.Response:
        text = await request.text()
        body = json.loads(text) if text else None
        with self._lock:
            self.received.append((request.path, dict(request.headers), body))
        return web.Response(status=self.statuses.get(request.path, 200))

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def bodies(self, path: str | None = None) -> list[Any]:
        with self._lock:
            return [body for p, _, body in self.received if path is None or p == path]

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
