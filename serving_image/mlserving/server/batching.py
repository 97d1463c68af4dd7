"""Adaptive batching: requests that are waiting at the same moment run as one model call.

A request with no other request waiting behind it runs at once (``waiting`` counts requests
already parsed but not yet handled, and requests being handled). With ``max_wait`` 0 (the default) nothing ever waits for a batch to fill: a request queues, and the
queue is flushed on the next turn of the event loop, so only requests that arrived together are
merged. That costs a lone request one loop turn (microseconds) and saves a model call per merged
request under concurrency. A positive ``max_wait`` holds the queue up to that long, but only while
other requests are in flight (a lone request never waits). Requests merge when their inputs have the
same names, dtypes and trailing shapes and they ask for the same outputs; each gets back its slice.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from mlserving.runtimes.base import ModelRuntime

log = logging.getLogger(__name__)

# Calls with more rows than this leave the event loop even on fast runtimes.
INLINE_MAX_ROWS = 4096


@dataclass
class _Item:
    key: tuple[object, ...]
    inputs: Mapping[str, np.ndarray]
    outputs: tuple[str, ...] | None
    rows: int
    future: asyncio.Future[dict[str, np.ndarray]]


class Batcher:
    def __init__(
        self,
        runtime: ModelRuntime,
        *,
        max_batch: int,
        max_wait: float,
        waiting: Callable[[], int] = lambda: 0,
        on_call: Callable[[int], None] | None = None,
    ) -> None:
        self.runtime = runtime
        self.max_batch = max_batch
        self.max_wait = max_wait
        self._waiting = waiting
        self._on_call = on_call
        self._queue: list[_Item] = []
        self._queued_rows = 0
        self._scheduled: asyncio.Handle | asyncio.TimerHandle | None = None
        self._busy = False
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mlserving-predict")

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    def _call(self, inputs: Mapping[str, np.ndarray], outputs: Sequence[str] | None) -> dict[str, np.ndarray]:
        result = self.runtime.predict(inputs, outputs)
        if self._on_call is not None:
            first = next(iter(inputs.values()))
            self._on_call(int(first.shape[0]) if first.ndim else 1)
        return result

    async def predict(
        self, inputs: Mapping[str, np.ndarray], outputs: Sequence[str] | None
    ) -> dict[str, np.ndarray]:
        runtime = self.runtime
        first = next(iter(inputs.values()))
        rows = int(first.shape[0]) if first.ndim else 1
        out = tuple(outputs) if outputs else None
        alone = not self._queue and not self._busy and self._waiting() <= 0
        if alone or self.max_batch <= 1 or not runtime.batchable or rows >= self.max_batch:
            if runtime.blocking or rows > INLINE_MAX_ROWS:
                loop = asyncio.get_running_loop()
                return await loop.run_in_executor(self._executor, self._call, inputs, out)
            return self._call(inputs, out)
        key = (out, *((name, arr.dtype.str, arr.shape[1:]) for name, arr in inputs.items()))
        loop = asyncio.get_running_loop()
        future: asyncio.Future[dict[str, np.ndarray]] = loop.create_future()
        self._queue.append(_Item(key, inputs, out, rows, future))
        self._queued_rows += rows
        if not self._busy:
            if self._queued_rows >= self.max_batch:
                if self._scheduled is not None:
                    self._scheduled.cancel()
                self._scheduled = loop.call_soon(self._flush)
            elif self._scheduled is None:
                if self.max_wait > 0 and self._waiting() >= len(self._queue):
                    self._scheduled = loop.call_later(self.max_wait, self._flush)
                else:
                    self._scheduled = loop.call_soon(self._flush)
        return await future

    def _groups(self, items: list[_Item]) -> list[list[_Item]]:
        by_key: dict[tuple[object, ...], list[list[_Item]]] = {}
        for item in items:
            chunks = by_key.setdefault(item.key, [[]])
            current = chunks[-1]
            if current and sum(i.rows for i in current) + item.rows > self.max_batch:
                current = []
                chunks.append(current)
            current.append(item)
        return [chunk for chunks in by_key.values() for chunk in chunks]

    def _flush(self) -> None:
        self._scheduled = None
        if self._busy or not self._queue:
            return
        items, self._queue, self._queued_rows = self._queue, [], 0
        groups = self._groups(items)
        if self.runtime.blocking:
            self._busy = True
            asyncio.get_running_loop().create_task(self._run_in_thread(groups))
        else:
            for group in groups:
                self._run_group(group)

    async def _run_in_thread(self, groups: list[list[_Item]]) -> None:
        loop = asyncio.get_running_loop()
        try:
            for group in groups:
                results = await loop.run_in_executor(self._executor, self._compute, group)
                self._deliver(group, results)
        finally:
            self._busy = False
            if self._queue and self._scheduled is None:
                self._scheduled = loop.call_soon(self._flush)

    def _run_group(self, group: list[_Item]) -> None:
        self._deliver(group, self._compute(group))

    def _compute(self, group: list[_Item]) -> list[dict[str, np.ndarray] | BaseException]:
        """Results per item, or the exception for that item; one model call when possible."""
        if len(group) == 1:
            item = group[0]
            try:
                return [self._call(item.inputs, item.outputs)]
            except Exception as exc:
                return [exc]
        total = sum(i.rows for i in group)
        try:
            merged = {name: np.concatenate([i.inputs[name] for i in group]) for name in group[0].inputs}
            result = self._call(merged, group[0].outputs)
            if all(v.ndim and v.shape[0] == total for v in result.values()):
                sliced: list[dict[str, np.ndarray] | BaseException] = []
                start = 0
                for item in group:
                    end = start + item.rows
                    sliced.append({k: v[start:end] for k, v in result.items()})
                    start = end
                return sliced
        except Exception:
            log.debug("merged call failed; running the %d requests one by one", len(group), exc_info=True)
        out: list[dict[str, np.ndarray] | BaseException] = []
        for item in group:
            try:
                out.append(self._call(item.inputs, item.outputs))
            except Exception as exc:
                out.append(exc)
        return out

    @staticmethod
    def _deliver(group: list[_Item], results: list[dict[str, np.ndarray] | BaseException]) -> None:
        for item, result in zip(group, results, strict=True):
            if item.future.done():
                continue
            if isinstance(result, BaseException):
                item.future.set_exception(result)
            else:
                item.future.set_result(result)
