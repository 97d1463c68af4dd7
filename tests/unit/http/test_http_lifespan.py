"""The application shape both servers share: HTTP to handle(), lifespan to startup()/shutdown()."""

from __future__ import annotations

import asyncio

from mlserving.http import Application


class Recording(Application):
    def __init__(self, fail_startup: bool = False) -> None:
        self.calls: list[str] = []
        self.fail_startup = fail_startup

    async def handle(self, scope, receive, send) -> None:
        self.calls.append(f"handle {scope['path']}")

    async def startup(self) -> None:
        self.calls.append("startup")
        if self.fail_startup:
            raise RuntimeError("the route table file is missing")

    async def shutdown(self) -> None:
        self.calls.append("shutdown")


async def run_lifespan(app: Application, *incoming: str) -> list[dict]:
    queue: asyncio.Queue[dict] = asyncio.Queue()
    for kind in incoming:
        queue.put_nowait({"type": kind})
    sent: list[dict] = []

    async def send(message: dict) -> None:
        sent.append(message)

    await asyncio.wait_for(app({"type": "lifespan"}, queue.get, send), timeout=5)
    return sent


async def test_startup_then_shutdown_are_reported_complete():
    app = Recording()
    sent = await run_lifespan(app, "lifespan.startup", "lifespan.shutdown")
    assert sent == [{"type": "lifespan.startup.complete"}, {"type": "lifespan.shutdown.complete"}]
    assert app.calls == ["startup", "shutdown"]


async def test_failed_startup_is_reported_with_its_reason_and_ends_the_lifespan():
    app = Recording(fail_startup=True)
    sent = await run_lifespan(app, "lifespan.startup")
    assert sent == [{"type": "lifespan.startup.failed", "message": "the route table file is missing"}]
    assert app.calls == ["startup"]


async def test_http_requests_go_to_handle():
    app = Recording()

    async def never() -> dict:
        raise AssertionError("handle reads nothing here")

    async def ignore(message: dict) -> None:
        raise AssertionError("handle sends nothing here")

    await app({"type": "http", "path": "/v2/health/live"}, never, ignore)
    await app({"type": "websocket", "path": "/ws"}, never, ignore)
    assert app.calls == ["handle /v2/health/live"]
