"""A real CloudEvents sink for graph tests and benchmarks: records every POST, answers after a delay.

Run: python event_sink.py --port P [--delay SECONDS] [--fail-first N]
GET /received answers what it recorded: [{"headers": {...}, "body": <JSON or text>}, ...]
(``--fail-first N`` answers the first N events 503, so the sender retries them.)
"""

from __future__ import annotations

import argparse
import asyncio
import json

import uvicorn


def make_app(delay: float, fail_first: int):
    received: list[dict] = []
    failures = {"left": fail_first}

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
        status, payload = 200, b"{}"
        if scope["method"] == "POST":
            if delay:
                await asyncio.sleep(delay)
            if failures["left"] > 0:
                failures["left"] -= 1
                status = 503
            else:
                try:
                    document = json.loads(body)
                except ValueError:
                    document = body.decode(errors="replace")
                headers = {k.decode(): v.decode() for k, v in scope["headers"]}
                received.append({"headers": headers, "body": document})
        elif scope["path"] == "/received":
            payload = json.dumps(received).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": payload})

    return app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--delay", type=float, default=0.0, help="seconds before answering each event")
    parser.add_argument("--fail-first", type=int, default=0, help="answer the first N events 503")
    args = parser.parse_args()
    uvicorn.run(
        make_app(args.delay, args.fail_first),
        host="127.0.0.1",
        port=args.port,
        log_level="warning",
        loop="uvloop",
        http="httptools",
    )


if __name__ == "__main__":
    main()
