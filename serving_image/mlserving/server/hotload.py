"""Hot-loading of the online learner's snapshots into a serving replica.

Every ``interval`` seconds a worker thread asks ``mlserving.learning.follower.SnapshotFollower``
for the snapshot to serve (the store's ``serving`` pointer, which follows the newest snapshot unless
the learner pinned one, or the replica's own ``--pinned-snapshot``); a snapshot not served yet is
fetched, its signature and checksums verified, and its model loaded, all off the event loop. Only the swap
itself runs on the loop, as one assignment in the data plane. A snapshot that fails verification,
does not load or changes the model's interface is refused once (logged and counted) and serving
stays on the current model; a storage error is retried on the next poll.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import KW_ONLY, dataclass, field
from typing import Any, Protocol

from mlserving.learning.manifest import SnapshotError, SnapshotMissing
from mlserving.runtimes.base import ModelRuntime
from mlserving.server.metrics import LearningMetrics

log = logging.getLogger("mlserving.server")


class SnapshotSource(Protocol):
    """What the hot loader needs of a follower (``SnapshotFollower`` in production)."""

    current: int | None
    refused: dict[int, str]

    def poll(self, pinned: int | None = None) -> Any: ...

    def serving(self, version: int) -> None: ...


class IncompatibleSnapshot(SnapshotError):
    """The snapshot's model takes other inputs or gives other outputs than the served one."""


@dataclass(eq=False)
class SnapshotHotLoader:
    """Serves the follower's snapshots: ``swap(runtime, version)`` serves the runtime, or raises
    IncompatibleSnapshot."""

    source: SnapshotSource
    _: KW_ONLY
    open_runtime: Callable[[Any], ModelRuntime]
    swap: Callable[[ModelRuntime, int], None]
    metrics: LearningMetrics
    interval: float
    pinned: int | None = None
    _last_problem: str = field(default="", init=False)

    async def run(self) -> None:
        while True:
            await self.poll_once()
            await asyncio.sleep(self.interval)

    async def poll_once(self) -> int | None:
        """Serve the next snapshot if there is one; the version now served when it changed."""
        started = time.perf_counter()
        snapshot = await self._fetch()
        if snapshot is None:
            return None
        version = int(snapshot.version)
        try:
            runtime = await asyncio.to_thread(self.open_runtime, snapshot)
        except Exception as exc:
            self._refuse(version, f"snapshot {version}: its model does not load: {type(exc).__name__}: {exc}")
            return None
        try:
            self.swap(runtime, version)
        except IncompatibleSnapshot as exc:
            runtime.unload()
            self._refuse(version, str(exc))
            return None
        # in the same step as the swap: no response may name a snapshot the metric does not show yet
        self.metrics.snapshot_version.set(version)
        await asyncio.to_thread(self.source.serving, version)
        elapsed = time.perf_counter() - started
        self.metrics.snapshot_loads.inc()
        self.metrics.snapshot_load_seconds.set(elapsed)
        self._last_problem = ""
        log.info("serving snapshot %d", version, extra={"load_seconds": round(elapsed, 3)})
        return version

    async def _fetch(self) -> Any:
        """The verified snapshot to serve next, or None (nothing new, or a problem logged)."""
        try:
            return await asyncio.to_thread(self.source.poll, self.pinned)
        except SnapshotMissing as exc:
            self._problem(logging.WARNING, f"pinned snapshot not published: {exc}")
        except SnapshotError as exc:
            # The follower refuses the same snapshot only once: this is counted once per snapshot.
            self.metrics.snapshot_refused.inc()
            log.error("snapshot refused, serving stays unchanged: %s", exc)
        except Exception as exc:
            self.metrics.snapshot_poll_errors.inc()
            self._problem(logging.WARNING, f"cannot read the snapshot storage: {type(exc).__name__}: {exc}")
        return None

    def _refuse(self, version: int, reason: str) -> None:
        # Marked refused so that the same bytes are not fetched and loaded again on every poll.
        self.source.refused[version] = reason
        self.metrics.snapshot_refused.inc()
        log.error("snapshot refused, serving stays unchanged: %s", reason)

    def _problem(self, level: int, message: str) -> None:
        """Log a recurring problem when it starts or changes, not on every poll."""
        if message != self._last_problem:
            self._last_problem = message
            log.log(level, message)
