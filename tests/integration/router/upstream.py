"""A small real upstream for router tests: speaks enough Open Inference Protocol, or misbehaves on purpose.

Run: python upstream.py --port P --name NAME [--label N] [--delay S] [--status CODE]
                        [--mode ok|badjson|tcp-garbage|tcp-hang]
GET /stats answers what it has seen (inference count, feedback bodies, the id header of the last request).
"""

from __future__ import annotations

import argparse
import asyncio
import json

import uvicorn


def make_app(name: str, label: int, delay: float, value: float, infer_status: int = 200):
    stats = {"infer": 0, "feedback": [], "last_id_header": None, "last_headers": {}}

    async def app(scope, receive, send):
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                await send({"type": message["type"] + ".complete"})
                if message["type"] == "lifespan.shutdown":
                    return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        path, headers = scope["path"], {k.decode(): v.decode() for k, v in scope["headers"]}
        status, payload = 200, None
        if path.endswith("/infer") or path.endswith(":predict"):
            stats["infer"] += 1
            stats["last_id_header"] = headers.get("x-mlrollouts-id")
            stats["last_headers"] = headers
            if delay:
                await asyncio.sleep(delay)
            model = path.split("/")[3].split(":")[0]
            if infer_status != 200:
                status, payload = infer_status, {"error": f"{name} fails on purpose"}
            elif path.endswith(":predict"):
                payload = {"predictions": [label], "served_by": name}
            else:
                request = json.loads(body or b"{}")
                payload = {
                    "id": request.get("id", "upstream-id"),
                    "model_name": model,
                    "outputs": [
                        {"name": "label", "datatype": "INT64", "shape": [1], "data": [label]},
                        {"name": "score", "datatype": "FP32", "shape": [1], "data": [value]},
                    ],
                    "served_by": name,
                    "path": path,
                    "query": scope["query_string"].decode(),
                }
        elif path.endswith("/feedback"):
            stats["feedback"].append(json.loads(body))
            payload = {"ok": True}
        elif path == "/stats":
            payload = stats
        elif path.startswith("/v2/models/"):
            payload = {"name": path.split("/")[3], "platform": "test", "served_by": name}
        elif path.startswith("/v2/health"):
            payload = {"ok": True}
        else:
            status, payload = 404, {"error": "not found"}
        data = json.dumps(payload).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", b"application/json"), (b"x-upstream", name.encode())],
            }
        )
        await send({"type": "http.response.body", "body": data})

    return app


async def tcp_server(port: int, mode: str) -> None:
    async def handle(reader, writer):
        try:
            await reader.read(65536)
            if mode == "tcp-garbage":
                writer.write(b"\x00\xffthis is not HTTP at all\r\n\r\n")
                await writer.drain()
            elif mode == "badjson":
                writer.write(
                    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 9\r\n\r\n<html>oop"
                )
                await writer.drain()
                return
            else:  # tcp-hang: read forever, never answer
                while await reader.read(65536):
                    pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", port)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--name", default="upstream")
    parser.add_argument("--label", type=int, default=0)
    parser.add_argument("--value", type=float, default=0.5)
    parser.add_argument("--delay", type=float, default=0.0)
    parser.add_argument("--status", type=int, default=200, help="status of every inference answer")
    parser.add_argument("--keep-alive", type=float, default=5.0, help="idle keep-alive timeout (s)")
    parser.add_argument("--mode", default="ok", choices=["ok", "badjson", "tcp-garbage", "tcp-hang"])
    args = parser.parse_args()
    if args.mode != "ok":
        asyncio.run(tcp_server(args.port, args.mode))
        return
    uvicorn.run(
        make_app(args.name, args.label, args.delay, args.value, args.status),
        host="127.0.0.1",
        port=args.port,
        log_level="warning",
        loop="uvloop",
        http="httptools",
        timeout_keep_alive=args.keep_alive,
    )


if __name__ == "__main__":
    main()
