"""Delivery of graph results as CloudEvents to a sink, never on the inference path.

``submit`` only tests the filter and puts the result on a bounded queue; a full queue drops the
event and counts it. A few workers build each CloudEvent (structured or binary HTTP mode, with the
``cloudevents`` SDK), POST it over their own connection pool and retry transient failures (no
answer, 408, 425, 429, 5xx) with exponential back-off and jitter; other answers drop the event.
Every retry keeps the event's id, so a sink can tell a redelivery from a new event.

Counted in ``mlgraph_events_total{graph,outcome}``: delivered, retried (one per retry), dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from cloudevents.core.bindings.http import HTTPMessage, to_binary, to_structured
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent

from mlserving.router.graph.metrics import GraphMetrics
from mlserving.router.graph.model import EventFilter, Events
from mlserving.router.graph.tensors import COMPARISONS, Tensor, TensorError, flat_data, row_size
from mlserving.router.upstream import Endpoint, UpstreamError, UpstreamPool

log = logging.getLogger("mlserving.router.graph.events")

_RETRY_STATUSES = frozenset({408, 425, 429})
_FORMAT = JSONFormat()
_DROP_LOG_SECONDS = 10.0


class EventPublisher:
    """One graph's event stream: ``start()``, ``submit()`` per result, ``await stop()`` to drain."""

    def __init__(
        self,
        graph: str,
        spec: Events,
        metrics: GraphMetrics | None = None,
        *,
        pool: UpstreamPool | None = None,
    ) -> None:
        self.graph = graph
        self.spec = spec
        self.source = spec.source or f"/mlrollouts/graphs/{graph}"
        self.metrics = metrics
        self.delivered = self.retried = self.dropped = 0
        self._endpoint = Endpoint.parse(spec.sink)
        self._path = "" if self._endpoint.prefix else "/"
        self._pool = pool or UpstreamPool(max_idle_per_endpoint=spec.concurrency)
        self._queue: asyncio.Queue[tuple[dict[str, Any], list[Tensor], float]] | None = None
        self._workers: list[asyncio.Task[None]] = []
        self._state = "new"  # new -> running -> stopped
        self._random = random.Random()
        self._drops_unlogged = 0
        self._drop_logged_at = 0.0

    # -- lifecycle ---------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the workers (needs a running event loop); idempotent."""
        if self._state != "new":
            return
        self._queue = asyncio.Queue(maxsize=self.spec.queue_size)
        self._workers = [
            asyncio.get_running_loop().create_task(self._work(), name=f"graph-events-{self.graph}-{i}")
            for i in range(self.spec.concurrency)
        ]
        self._state = "running"

    async def stop(self, drain_seconds: float | None = None) -> None:
        """Stop taking events, deliver what is queued within the drain time, drop (and count) the rest."""
        if self._state != "running":
            self._state = "stopped"
            return
        self._state = "stopped"
        assert self._queue is not None
        seconds = self.spec.drain_seconds if drain_seconds is None else drain_seconds
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._queue.join()
        for worker in self._workers:
            worker.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        left = self._queue.qsize()
        if left:
            self._drop(left, "still queued at shutdown")
        self._pool.close()

    @property
    def queued(self) -> int:
        return self._queue.qsize() if self._queue is not None else 0

    # -- the request path --------------------------------------------------------------------------

    def submit(self, response: dict[str, Any], inputs: list[Tensor]) -> bool:
        """Queue one result (never waits); False when filtered out or dropped."""
        if self._state == "new":
            self.start()
        if self._state != "running":
            self._drop(1, "the publisher is stopped")
            return False
        if self.spec.filter is not None and not _matches(self.spec.filter, response["outputs"]):
            return False
        assert self._queue is not None
        try:
            self._queue.put_nowait((response, inputs, time.time()))
        except asyncio.QueueFull:
            self._drop(1, f"the queue is full ({self.spec.queue_size} events)")
            return False
        return True

    # -- the workers -------------------------------------------------------------------------------

    async def _work(self) -> None:
        assert self._queue is not None
        while True:
            item = await self._queue.get()
            try:
                await self._deliver(self._message(*item))
            except asyncio.CancelledError:
                self._drop(1, "in flight at shutdown")
                raise
            except Exception:  # a broken event must never stop the worker
                log.exception("graph %s: event could not be built or sent", self.graph)
                self._drop(1, "it could not be built")
            finally:
                self._queue.task_done()

    def _message(self, response: dict[str, Any], inputs: list[Tensor], submitted: float) -> HTTPMessage:
        data = dict(response)
        if self.spec.include_inputs:
            data["inputs"] = inputs
        attributes = {
            "type": self.spec.type,
            "source": self.source,
            "id": response.get("id") or str(uuid.uuid4()),
            "subject": response.get("model_name") or self.graph,
            "time": datetime.fromtimestamp(submitted, UTC),
            "datacontenttype": "application/json",
        }
        event = CloudEvent(attributes, data)
        if self.spec.mode == "binary":
            return to_binary(event, _FORMAT)
        return to_structured(event, _FORMAT)

    async def _deliver(self, message: HTTPMessage) -> None:
        headers = [
            (name.lower().encode("latin-1"), value.encode("latin-1"))
            for name, value in message.headers.items()
        ]
        for attempt in range(1, self.spec.max_attempts + 1):
            problem = await self._post(headers, message.body)
            if problem is None:
                self.delivered += 1
                self._count("delivered")
                return
            retry, reason = problem
            if not retry or attempt == self.spec.max_attempts:
                self._drop(1, f"{reason} (attempt {attempt} of {self.spec.max_attempts})")
                return
            self.retried += 1
            self._count("retried")
            await asyncio.sleep(self._backoff(attempt))

    async def _post(self, headers: list[tuple[bytes, bytes]], body: bytes) -> tuple[bool, str] | None:
        """None when delivered, else (worth retrying, why not)."""
        timeout = self.spec.timeout_seconds
        try:
            status, _, _ = await self._pool.request(
                self._endpoint, "POST", self._path, headers, body, timeout, min(timeout, 5.0)
            )
        except UpstreamError as exc:
            return True, f"sink {self.spec.sink} failed: {exc}"
        if 200 <= status < 300:
            return None
        retry = status in _RETRY_STATUSES or status >= 500
        return retry, f"sink {self.spec.sink} answered {status}"

    def _backoff(self, attempt: int) -> float:
        ceiling = min(self.spec.max_backoff_seconds, self.spec.initial_backoff_seconds * 2 ** (attempt - 1))
        # Jitter spreads the retries of many routers that lost the same sink at the same moment.
        return self._random.uniform(ceiling / 2, ceiling)

    # -- counting ----------------------------------------------------------------------------------

    def _count(self, outcome: str, amount: int = 1) -> None:
        if self.metrics is not None:
            self.metrics.count_event(self.graph, outcome, amount)

    def _drop(self, amount: int, reason: str) -> None:
        self.dropped += amount
        self._count("dropped", amount)
        self._drops_unlogged += amount
        now = time.monotonic()
        if now - self._drop_logged_at >= _DROP_LOG_SECONDS:
            log.warning(
                "graph %s: dropped %d event(s) to %s, last because %s",
                self.graph, self._drops_unlogged, self.spec.sink, reason,
            )  # fmt: skip
            self._drop_logged_at, self._drops_unlogged = now, 0


def _matches(event_filter: EventFilter, outputs: list[Tensor]) -> bool:
    """Whether any row of the tested output passes the filter."""
    if not outputs:
        return False
    name = event_filter.output
    tensor = outputs[0] if name is None else next((t for t in outputs if t["name"] == name), None)
    if tensor is None:
        return False
    size = row_size(tensor)
    if event_filter.feature >= size:
        return False
    test, value = COMPARISONS[event_filter.op.value], event_filter.value
    comparable = str if isinstance(value, str) else int | float
    try:
        column = flat_data(tensor)[event_filter.feature :: size]
    except TensorError:
        return False
    # Elements of another kind (null for NaN, nested junk from a component) never pass the filter.
    return any(isinstance(element, comparable) and test(element, value) for element in column)
