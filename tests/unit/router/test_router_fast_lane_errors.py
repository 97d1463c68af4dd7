"""The fast lane's protocol on a real loopback socket: an unexpected error while forwarding answers
500 as the ASGI path does, and the connection goes on serving."""

from __future__ import annotations

import asyncio

import orjson
from uvicorn.config import Config
from uvicorn.server import ServerState

from mlserving.router.app import RouterApp
from mlserving.router.fastlane import router_protocol
from mlserving.router.ids import IdSigner
from mlserving.router.table import RouteTable


class BrokenForwarding(RouterApp):
    def forward(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        raise RuntimeError("a bug while forwarding")


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = next(
        int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.startswith(b"content-length")
    )
    return status, await reader.readexactly(length)


async def test_an_error_while_forwarding_answers_500_and_the_connection_keeps_serving(caplog):
    app = BrokenForwarding(IdSigner(b"fast-lane-tests-signing-key-0123"))
    app.set_table(
        RouteTable.from_dict(
            {
                "routes": [
                    {
                        "name": "iris",
                        "model": "iris",
                        "variants": [{"name": "a", "weight": 100, "upstreams": ["http://127.0.0.1:9"]}],
                    }
                ]
            }
        )
    )
    config = Config(app, http="httptools", lifespan="off", server_header=False, date_header=False)
    config.load()
    state = ServerState()
    protocol = router_protocol(app)
    server = await asyncio.get_running_loop().create_server(
        lambda: protocol(config=config, server_state=state, app_state={}), "127.0.0.1", 0
    )
    port = server.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    body = b'{"inputs": []}'
    writer.write(
        b"POST /v2/models/iris/infer HTTP/1.1\r\nhost: x\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body)
    )
    status, answer = await asyncio.wait_for(read_response(reader), 5)
    assert status == 500 and orjson.loads(answer) == {"error": "internal router error (logged)"}
    assert "a bug while forwarding" in caplog.text
    writer.write(b"GET /v2/health/live HTTP/1.1\r\nhost: x\r\n\r\n")
    status, answer = await asyncio.wait_for(read_response(reader), 5)
    assert (status, orjson.loads(answer)) == (200, {"live": True})
    writer.close()
    server.close()
    await server.wait_closed()
