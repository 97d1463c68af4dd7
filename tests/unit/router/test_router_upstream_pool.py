"""The router's pooled upstream client against a real HTTP server on loopback: callbacks and the
coroutine agree, and giving up a request never touches another one that reuses its connection."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp import web

from mlserving.router.upstream import ConnectFailed, Endpoint, RequestTimeout, UpstreamPool
from support.loopback import serving


@pytest.fixture
async def server():
    async def echo(request: web.Request) -> web.Response:
        delay = float(request.query.get("delay", "0"))
        if delay:
            await asyncio.sleep(delay)
        return web.Response(body=await request.read(), content_type="application/json")

    app = web.Application()
    app.router.add_post("/echo", echo)
    async with serving(app) as url:
        yield Endpoint.parse(url)


async def test_start_calls_back_once_with_the_answer_and_reuses_the_connection(server):
    pool = UpstreamPool()
    outcomes: list = []
    done = asyncio.Event()

    def record(answer, error):
        outcomes.append((answer, error))
        done.set()

    pool.start(server, "POST", "/echo", [], b'{"a":1}', 5.0, 1.0, record)
    assert outcomes == []  # never from within the call
    await asyncio.wait_for(done.wait(), 5)
    ((answer, error),) = outcomes
    assert error is None and answer[0] == 200 and answer[2] == b'{"a":1}'
    assert pool.idle_connections() == 1
    status, _, body = await pool.request(server, "POST", "/echo", [], b"2", 5.0, 1.0)
    assert (status, body, pool.idle_connections()) == (200, b"2", 1)
    pool.close()


async def test_aborting_an_answered_request_spares_the_next_one_on_its_connection(server):
    pool = UpstreamPool()
    first: asyncio.Future = asyncio.get_running_loop().create_future()
    pending = pool.start(server, "POST", "/echo", [], b"1", 5.0, 1.0, lambda a, e: first.set_result(a))
    await first
    # The connection is back in the pool: the next request takes it, then the first is given up late
    # (as when the task that waited for it is cancelled just after its answer).
    second = asyncio.ensure_future(pool.request(server, "POST", "/echo?delay=0.2", [], b"2", 5.0, 1.0))
    await asyncio.sleep(0.05)
    pending.abort()
    status, _, body = await asyncio.wait_for(second, 5)
    assert (status, body) == (200, b"2")
    pool.close()


async def test_a_cancelled_request_closes_its_connection_and_is_not_answered(server):
    pool = UpstreamPool()
    task = asyncio.ensure_future(pool.request(server, "POST", "/echo?delay=1", [], b"1", 5.0, 1.0))
    await asyncio.sleep(0.2)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert pool.idle_connections() == 0
    status, _, _ = await pool.request(server, "POST", "/echo", [], b"3", 5.0, 1.0)
    assert status == 200
    pool.close()


async def test_timeouts_and_dead_endpoints_are_typed_errors(server):
    pool = UpstreamPool()
    with pytest.raises(RequestTimeout):
        await pool.request(server, "POST", "/echo?delay=1", [], b"1", 0.2, 1.0)
    assert pool.idle_connections() == 0
    dead = Endpoint.parse("http://127.0.0.1:9")  # discard port: nothing listens
    with pytest.raises(ConnectFailed):
        await pool.request(dead, "POST", "/echo", [], b"1", 1.0, 1.0)
    pool.close()
