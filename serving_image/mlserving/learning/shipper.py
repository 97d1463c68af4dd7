"""Send logged requests from a serving replica to the learner, batched and off the inference path.

``LogShipper.log`` only appends to an in-memory queue (no I/O, no serialization); a background task
posts the queue to the learner's ``POST /v1/log`` in batches of up to ``max_batch`` records, at
least every ``flush_interval`` seconds. While the learner is unreachable or not ready, batches are
retried with exponential back-off; the queue holds at most ``max_queue`` records and drops the
oldest beyond that (counted in ``dropped``), so inference never waits and memory stays bounded.
A batch the learner refuses as a whole (HTTP 400/413) is dropped, not retried.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from typing import Any

import orjson

log = logging.getLogger(__name__)


def _jsonable(value: Any) -> Any:
    tolist = getattr(value, "tolist", None)
    if tolist is not None:
        return tolist()
    raise TypeError(f"cannot send {type(value).__name__} to the learner")


class LogShipper:
    def __init__(
        self,
        url: str,
        *,
        max_batch: int = 512,
        flush_interval: float = 0.05,
        max_queue: int = 50_000,
        timeout: float = 5.0,
        retry_max: float = 10.0,
        client: Any = None,
    ) -> None:
        """``url``: the learner's base URL, e.g. ``http://mymodel-learner:8080``."""
        self.url = url.rstrip("/") + "/v1/log"
        self.max_batch = max_batch
        self.flush_interval = flush_interval
        self.timeout = timeout
        self.retry_max = retry_max
        self._queue: deque[dict[str, Any]] = deque(maxlen=max_queue)
        self._client = client
        self._own_client = client is None
        self._task: asyncio.Task[None] | None = None
        self._wakeup = asyncio.Event()
        self.sent = 0  # records the learner accepted
        self.refused = 0  # records the learner refused (malformed)
        self.dropped = 0  # records dropped because the queue was full
        self.failures = 0  # posts that failed and were retried

    def log(
        self,
        response_id: str,
        features: Any,
        prediction: Any,
        snapshot: int | None,
        served_at: float | None = None,
    ) -> None:
        """Queue one served request (features and prediction may be numpy arrays)."""
        if len(self._queue) == self._queue.maxlen:
            self.dropped += 1
        self._queue.append(
            {
                "id": response_id,
                "features": features,
                "prediction": prediction,
                "snapshot": snapshot,
                "time": time.time() if served_at is None else served_at,
            }
        )
        if len(self._queue) >= self.max_batch:
            self._wakeup.set()

    @property
    def queued(self) -> int:
        return len(self._queue)

    async def start(self) -> None:
        if self._client is None:
            import httpx

            self._client = httpx.AsyncClient(timeout=self.timeout)
        self._task = asyncio.get_running_loop().create_task(self._run(), name="log-shipper")

    async def close(self, drain_timeout: float = 5.0) -> None:
        """Send what is queued (for up to ``drain_timeout`` seconds), then stop."""
        deadline = time.monotonic() + drain_timeout
        while (
            self._queue and time.monotonic() < deadline and self._task is not None and not self._task.done()
        ):
            self._wakeup.set()
            await asyncio.sleep(0.01)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._own_client and self._client is not None:
            await self._client.aclose()

    async def _run(self) -> None:
        delay = self.flush_interval
        while True:
            if len(self._queue) < self.max_batch:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wakeup.wait(), self.flush_interval)
            self._wakeup.clear()
            if not self._queue:
                continue
            batch = [self._queue.popleft() for _ in range(min(self.max_batch, len(self._queue)))]
            if await self._post(batch):
                delay = self.flush_interval
                continue
            self.failures += 1
            # Back in front, in order; a full queue drops the newest rather than reorder.
            room = (self._queue.maxlen or 0) - len(self._queue)
            self.dropped += max(0, len(batch) - room)
            self._queue.extendleft(reversed(batch[: max(0, room)]))
            await asyncio.sleep(delay)
            delay = min(delay * 2 if delay > 0 else 0.1, self.retry_max)

    async def _post(self, batch: list[dict[str, Any]]) -> bool:
        """True when the batch is done with (accepted, or refused for good)."""
        body = orjson.dumps({"records": batch}, default=_jsonable, option=orjson.OPT_SERIALIZE_NUMPY)
        try:
            response = await self._client.post(
                self.url, content=body, headers={"content-type": "application/json"}
            )
        except Exception as exc:
            log.warning("cannot send %d logged requests to the learner: %s", len(batch), exc)
            return False
        if response.status_code == 200:
            answer = response.json()
            self.sent += int(answer.get("accepted", 0)) + int(answer.get("ignored", 0))
            self.refused += len(answer.get("rejected", []))
            return True
        if response.status_code in (400, 413):
            self.refused += len(batch)
            log.error("the learner refused %d logged requests: %s", len(batch), response.text[:500])
            return True
        log.warning("the learner answered %d to %d logged requests", response.status_code, len(batch))
        return False
