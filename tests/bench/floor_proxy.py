"""The floor of a Python reverse proxy, as a reference column for ``bench_router.py``.

It does the least a proxy can do per request, and nothing a router must: parse the request with
httptools, forward it on a pooled keep-alive connection, parse the answer and write it back, all in
protocol callbacks under uvloop (no task, no future, no ASGI). No split, no ids, no metrics, no
timeouts, no error handling: it is not a router, only the measure of how much CPU per request the
event loop, the parser and the system calls cost in Python.

    python tests/bench/floor_proxy.py UPSTREAM_PORT LISTEN_PORT MODEL
"""

from __future__ import annotations

import asyncio
import sys

import httptools
import uvloop


class Parsed(asyncio.Protocol):
    """A connection whose bytes go to an httptools parser that calls back this object."""

    def __init__(self, parser: type[httptools.HttpRequestParser | httptools.HttpResponseParser]) -> None:
        self.parser = parser(self)
        self.body: list[bytes] = []
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def on_body(self, body: bytes) -> None:
        self.body.append(body)


class Upstream(Parsed):
    def __init__(self, idle: list[Upstream]) -> None:
        super().__init__(httptools.HttpResponseParser)
        self.idle = idle
        self.client: Client | None = None

    def on_message_complete(self) -> None:
        body, self.body = b"".join(self.body), []
        client, self.client = self.client, None
        self.idle.append(self)
        assert client is not None
        client.respond(self.parser.get_status_code(), body)

    def forward(self, client: Client, request: bytes) -> None:
        assert self.transport is not None
        self.client = client
        self.transport.write(request)


class Client(Parsed):
    def __init__(self, upstream_port: int, model: bytes, idle: list[Upstream]) -> None:
        super().__init__(httptools.HttpRequestParser)
        self.upstream_port, self.model, self.idle = upstream_port, model, idle
        self.url = b""

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_message_complete(self) -> None:
        body, self.body = b"".join(self.body), []
        path, self.url = self.url.replace(b"/v2/models/iris/", b"/v2/models/" + self.model + b"/"), b""
        method = self.parser.get_method()
        request = b"%s %s HTTP/1.1\r\nhost: upstream\r\ncontent-type: application/json\r\n" % (method, path)
        request += b"content-length: %d\r\n\r\n%s" % (len(body), body)
        if self.idle:
            self.idle.pop().forward(self, request)
        else:
            asyncio.get_running_loop().create_task(self._connect(request))

    async def _connect(self, request: bytes) -> None:
        loop = asyncio.get_running_loop()
        _, upstream = await loop.create_connection(
            lambda: Upstream(self.idle), "127.0.0.1", self.upstream_port
        )
        upstream.forward(self, request)

    def respond(self, status: int, body: bytes) -> None:
        assert self.transport is not None
        head = b"HTTP/1.1 %d OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n" % (
            status,
            len(body),
        )
        self.transport.write(head + body)


async def main(upstream_port: int, port: int, model: str) -> None:
    loop = asyncio.get_running_loop()
    idle: list[Upstream] = []
    server = await loop.create_server(lambda: Client(upstream_port, model.encode(), idle), "127.0.0.1", port)
    await server.serve_forever()


if __name__ == "__main__":
    uvloop.run(main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]))
