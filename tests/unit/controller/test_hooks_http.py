"""Hook calls and the load generator against a real local HTTP server."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta

import httpx
from aiohttp import web

from mlrollouts.api.modeldeployment import HookResult, HookType, RolloutHook
from mlrollouts.controller.hooks import call_hook, follow_load
from mlrollouts.rollout.hooks import HookCall, LoadPlan

NOW = datetime(2026, 1, 1, tzinfo=UTC)


class Server:
    def __init__(self) -> None:
        self.bodies: list[dict] = []

    async def handle(self, request: web.Request) -> web.Response:
        self.bodies.append(json.loads(await request.text()))
        if request.path == "/slow":
            await asyncio.sleep(2)
        status = 500 if request.path == "/broken" else 200
        return web.Response(status=status, text="gate closed" if status == 500 else "ok")

    async def __aenter__(self) -> str:
        app = web.Application()
        app.router.add_post("/{path:.*}", self.handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        return f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]

    async def __aexit__(self, *_: object) -> None:
        await self.runner.cleanup()


def gate(url: str, timeout: str = "1s") -> HookCall:
    return HookCall(RolloutHook(name="confirm", type=HookType.STEP, url=url, timeout=timeout), "rev1", 2)


async def test_call_results_name_what_happened():
    server = Server()
    async with server as base, httpx.AsyncClient() as client:
        ok = await call_hook(client, gate(f"{base}/ok"), "ml", "fraud", "Progressing", NOW)
        broken = await call_hook(client, gate(f"{base}/broken"), "ml", "fraud", "Progressing", NOW)
        slow = await call_hook(client, gate(f"{base}/slow", "200ms"), "ml", "fraud", "Progressing", NOW)
    async with httpx.AsyncClient() as client:  # the server is gone: the connection is refused
        refused = await call_hook(client, gate(f"{base}/ok"), "ml", "fraud", "Progressing", NOW)
    assert (ok.result, ok.message, ok.step, ok.revision) == (HookResult.SUCCEEDED, "HTTP 200", 2, "rev1")
    assert (broken.result, broken.message) == (HookResult.FAILED, "HTTP 500: gate closed")
    assert slow.result is HookResult.FAILED and slow.message == "no answer within 0.2s"
    assert refused.result is HookResult.FAILED and refused.message.startswith("ConnectError")
    assert server.bodies[0]["step"] == 2 and server.bodies[0]["namespace"] == "ml"


async def test_load_is_sent_at_its_rate_until_the_step_ends():
    server = Server()
    hook = RolloutHook(name="warm", type=HookType.LOAD, rate=40, body={"inputs": [1]})
    async with server as base:
        memory: dict = {}
        until = datetime.now(UTC) + timedelta(seconds=0.5)
        plan = LoadPlan(hook, "rev1", 1, until)
        generator = await follow_load(memory, plan, f"{base}/v2/models/m/infer")
        assert generator is not None and await follow_load(memory, plan, "unused") is generator  # kept
        await asyncio.wait_for(generator.task, 3)  # ends by itself at the step's end
        sent = len(server.bodies)
        await asyncio.sleep(0.2)
        assert len(server.bodies) == sent  # nothing after the end
        assert 12 <= sent <= 24 and server.bodies[0] == {"inputs": [1]}  # about 40/s for 0.5 s
        assert generator.failed == 0

        longer = LoadPlan(hook, "rev1", 2, datetime.now(UTC) + timedelta(seconds=30))
        running = await follow_load(memory, longer, f"{base}/x")
        assert running is not None and running.running
        assert await follow_load(memory, None, None) is None and not running.running and "load" not in memory
