"""A revision's Service that the router has not resolved yet: the first request waits for the
resolver instead of failing (the router learns endpoints by polling the API)."""

from __future__ import annotations

import asyncio

import httpx
import orjson
from aiohttp import web

from mlserving.router.app import RouterApp
from mlserving.router.ids import IdSigner
from mlserving.router.table import RouteTable
from support.loopback import serving

SERVICE_URL = "http://iris-v2.ml.svc:80"


class LateResolver:
    """Resolves the Service only once ``learn`` is called, as the polling resolver does a moment
    after a route table first names it."""

    interval = 0.1

    def __init__(self) -> None:
        self.addresses: list[str] = []

    def want(self, urls: object) -> None:
        pass

    def on_change(self, callback: object) -> None:
        pass

    def resolve(self, url: str) -> list[str]:
        return list(self.addresses) if url == SERVICE_URL and self.addresses else [url]


def model_server() -> web.Application:
    async def infer(request: web.Request) -> web.Response:
        answer = {
            "model_name": "iris",
            "outputs": [{"name": "label", "datatype": "INT64", "shape": [1], "data": [2]}],
        }
        return web.Response(body=orjson.dumps(answer), content_type="application/json")

    app = web.Application()
    app.router.add_post("/v2/models/iris/infer", infer)
    return app


def router(resolver: LateResolver) -> RouterApp:
    app = RouterApp(IdSigner(b"k" * 32), resolver=resolver)  # type: ignore[arg-type]
    table = {
        "routes": [
            {
                "name": "iris",
                "model": "iris",
                "variants": [{"name": "v2", "weight": 100, "upstreams": [SERVICE_URL]}],
            }
        ]
    }
    app.set_table(RouteTable.from_dict(table))
    return app


async def infer(app: RouterApp) -> httpx.Response:
    body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [5.1, 3.5, 1.4, 0.2]}]}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://router") as client:
        return await client.post("/v2/models/iris/infer", json=body, timeout=10)


async def test_the_first_request_to_a_service_not_resolved_yet_waits_for_its_endpoints():
    async with serving(model_server()) as url:
        resolver = LateResolver()
        app = router(resolver)

        async def resolved_a_moment_later() -> None:
            await asyncio.sleep(resolver.interval)
            resolver.addresses = [url]
            app.endpoints_changed()

        learning = asyncio.create_task(resolved_a_moment_later())
        response = await infer(app)
        await learning
        assert response.status_code == 200, response.text
        assert response.json()["outputs"][0]["data"] == [2]


async def test_a_service_that_never_resolves_still_answers_502_naming_the_variant():
    app = router(LateResolver())
    started = asyncio.get_running_loop().time()
    response = await infer(app)
    assert response.status_code == 502 and "v2" in response.json()["error"]
    assert asyncio.get_running_loop().time() - started < 5 * LateResolver.interval + 2
