"""A CloudEvents sink for the playground: the receiver a CompositeModel's ``spec.events.sink`` points at.

Run as its own process (``python -m mlrollouts.local.event_sink --port P``), as a real consumer of the
events would be. It accepts CloudEvents over HTTP in structured or binary mode on any path (the
``cloudevents`` SDK reads them; anything else gets 400 naming the problem) and keeps the latest
events in memory. ``GET /events?after=SEQ&limit=N`` answers the counts and up to N (at most 1000)
of the events stored after that sequence number; ``GET /healthz`` answers once it listens. A redelivery (same event id) is counted
but stored once, so ``distinct`` is the number of different events received.

``EventSinkProcess`` starts the process on a free loopback port, reads what it received, and stops it.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from mlrollouts.local.playground import Child, free_port, http_ok

PAGE = 1000
"""Most events one ``GET /events`` answers."""


@dataclass
class ReceivedEvents:
    """What the sink received: counts, and the latest ``keep`` distinct events in arrival order."""

    keep: int = 10_000
    received: int = 0
    invalid: int = 0
    last_seq: int = 0
    by_id: OrderedDict[str, dict[str, Any]] = field(default_factory=OrderedDict)

    def add(self, attributes: dict[str, Any], data: Any) -> None:
        self.received += 1
        event_id = str(attributes.get("id"))
        if event_id in self.by_id:
            return
        self.last_seq += 1
        time_attr = attributes.get("time")
        self.by_id[event_id] = {
            "seq": self.last_seq,
            "id": event_id,
            "type": attributes.get("type"),
            "source": attributes.get("source"),
            "subject": attributes.get("subject"),
            "time": time_attr.isoformat() if isinstance(time_attr, datetime) else time_attr,
            "data": data,
        }
        if len(self.by_id) > self.keep:
            self.by_id.popitem(last=False)

    def page(self, after: int, limit: int = PAGE) -> dict[str, Any]:
        events = [e for e in self.by_id.values() if e["seq"] > after][: max(0, min(limit, PAGE))]
        return {
            "received": self.received,
            "distinct": self.last_seq,
            "invalid": self.invalid,
            "events": events,
        }


def make_app(store: ReceivedEvents) -> Any:
    from aiohttp import web
    from cloudevents.core.bindings.http import HTTPMessage, from_http
    from cloudevents.core.exceptions import BaseCloudEventException
    from cloudevents.core.formats.json import JSONFormat

    event_format = JSONFormat()

    async def receive(request: web.Request) -> web.Response:
        body = await request.read()
        headers = {name.lower(): value for name, value in request.headers.items()}
        try:
            event = from_http(HTTPMessage(headers, body), event_format)
        except (BaseCloudEventException, ValueError, KeyError, TypeError) as exc:
            store.invalid += 1
            return web.json_response({"error": f"not a CloudEvent: {exc}"}, status=400)
        store.add(event.get_attributes(), event.get_data())
        return web.Response(status=204)

    async def events(request: web.Request) -> web.Response:
        numbers = {}
        for name, default in (("after", 0), ("limit", PAGE)):
            try:
                numbers[name] = int(request.query.get(name, default))
            except ValueError:
                return web.json_response({"error": f"{name}: must be an integer"}, status=400)
        return web.json_response(store.page(**numbers))

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/events", events)
    app.router.add_get("/healthz", healthz)
    app.router.add_post("/{tail:.*}", receive)
    return app


def main(argv: list[str] | None = None) -> int:
    from aiohttp import web

    parser = argparse.ArgumentParser(prog="mlrollouts-event-sink", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--keep", type=int, default=10_000, help="distinct events kept in memory")
    args = parser.parse_args(argv)
    web.run_app(make_app(ReceivedEvents(keep=args.keep)), host=args.host, port=args.port, print=None)
    return 0


class EventSinkProcess:
    """The sink as a child process on a free loopback port; ``url`` is what ``spec.events.sink`` names."""

    def __init__(self, log_path: Path, path: str = "/events") -> None:
        port = free_port()
        self.base = f"http://127.0.0.1:{port}"
        self.url = f"{self.base}{path}"
        self.child = Child(
            "event-sink",
            [sys.executable, "-m", "mlrollouts.local.event_sink", "--port", str(port)],
            log_path,
            restartable=False,
        )

    def start(self, timeout: float = 30.0) -> EventSinkProcess:
        self.child.start()
        deadline = time.monotonic() + timeout
        while not http_ok(f"{self.base}/healthz"):
            if not self.child.alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the event sink did not start; see {self.child.log_path}")
            time.sleep(0.1)
        return self

    def received(self, after: int = 0, limit: int = PAGE) -> dict[str, Any]:
        """The counts, and up to ``limit`` events stored after sequence number ``after``."""
        params = {"after": after, "limit": limit}
        response = httpx.get(f"{self.base}/events", params=params, timeout=5.0)
        response.raise_for_status()
        page: dict[str, Any] = response.json()
        return page

    def events(self) -> list[dict[str, Any]]:
        """Every event the sink still holds, oldest first."""
        collected: list[dict[str, Any]] = []
        while True:
            page = self.received(collected[-1]["seq"] if collected else 0)["events"]
            if not page:
                return collected
            collected.extend(page)

    def stop(self) -> None:
        self.child.stop(grace=5.0)


if __name__ == "__main__":
    sys.exit(main())
