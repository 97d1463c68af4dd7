"""``RouterApp.forward``, the callback path both of the router's lanes take, against a real upstream on
loopback: one answer per request, and nothing left behind for the cycle collector."""

from __future__ import annotations

import asyncio
import gc

import orjson
import pytest
from aiohttp import web

from mlserving.router.app import Exchange, Forward, RouterApp
from mlserving.router.ids import IdSigner
from mlserving.router.table import RouteTable
from mlserving.router.upstream import Pending
from support.loopback import serving


@pytest.fixture
async def upstream():
    async def infer(request: web.Request) -> web.Response:
        document = await request.json()
        return web.json_response({"id": document.get("id"), "outputs": []})

    app = web.Application()
    app.router.add_post("/v2/models/{model}/infer", infer)
    async with serving(app) as url:
        yield url


def router_for(url: str) -> RouterApp:
    app = RouterApp(IdSigner(b"forward-tests-signing-key-0123"))
    app.set_table(
        RouteTable.from_dict(
            {
                "routes": [
                    {
                        "name": "iris",
                        "model": "iris",
                        "variants": [{"name": "a", "weight": 100, "upstreams": [url]}],
                    }
                ]
            }
        )
    )
    return app


async def forward_once(app: RouterApp) -> tuple[int, list, bytes]:
    answer: asyncio.Future = asyncio.get_running_loop().create_future()
    route = app.compiled.by_model["iris"]  # type: ignore[union-attr]
    variant = route.variants["a"]
    app.forward(
        route, variant, "iris", "/v2/models/", "/infer", "POST", [(b"content-type", b"application/json")],
        b'{"inputs": []}', True, 0.0, lambda *reply: answer.set_result(reply),
    )  # fmt: skip
    return await asyncio.wait_for(answer, 5)


async def test_the_answer_carries_the_signed_id_and_the_variant(upstream):
    app = router_for(upstream)
    status, headers, body = await forward_once(app)
    named = dict(headers)
    assert status == 200
    assert named[b"x-mlrollouts-variant"] == b"a"
    assert orjson.loads(body)["id"] == named[b"x-mlrollouts-id"].decode()
    assert app.signer.verify(orjson.loads(body)["id"], 1e10, 1e11).variant == "a"
    app.session.close()


async def test_a_forwarded_request_leaves_no_reference_cycle(upstream):
    app = router_for(upstream)
    await forward_once(app)  # the pooled connection exists from here on
    gc.collect()
    gc.disable()
    try:
        for _ in range(50):
            await forward_once(app)
        gc.set_debug(gc.DEBUG_SAVEALL)
        gc.collect()
        left = [o for o in gc.garbage if isinstance(o, (Forward, Exchange, Pending))]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
    assert left == []
    app.session.close()
