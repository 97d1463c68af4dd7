"""The learner's work, off the request path: join → write to the data log → learn → snapshot.

Request handlers only touch in-memory structures: logged requests go into the join buffer, and
joined feedback is queued for the data log. Three background tasks do the rest:

- the writer appends queued rows to the data log in group commits (one Delta commit per
  ``flush_interval`` or ``flush_rows``); a feedback is acknowledged only once its row is written,
  so a crash of the learner loses no acknowledged row;
- the trainer learns written rows in seq order and captures the learner every ``snapshot_every``
  samples;
- the publisher publishes the captures in order as numbered snapshots; when more than
  ``MAX_UNPUBLISHED`` wait (learning far outpaces publishing) the oldest are skipped.

Storage errors are retried with exponential back-off; meanwhile rows wait in memory (up to
``max_unwritten_rows``, beyond which feedback gets 503) and the last published snapshot stays served.

On start the learner resumes from the newest snapshot it can verify and replays the rows the log
holds after it; with no usable snapshot it starts from the initial model and publishes it as a
snapshot of its own (number 0 in a new store), so every model the replicas serve is signed. The
request ids of the newest rows in the log (up to ``max_waiting_requests`` rows) count as joined, so
feedback retried across a restart is answered 409 and never written twice.

Serving follows the newest snapshot unless it is pinned (:meth:`LearningPipeline.pin`, asked for by
the operator); learning and publishing go on while pinned, only what replicas serve stays put.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import tempfile
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

import numpy as np

from mlserving.learning.datalog import Commit, DataLog
from mlserving.learning.join import FeedbackOutcome, JoinBuffer
from mlserving.learning.learner import LearnerCapture, OnlineLearner
from mlserving.learning.location import StorageLocation
from mlserving.learning.manifest import SnapshotError, SnapshotMissing, finite_metrics
from mlserving.learning.records import JoinedRequest, LoggedRequest
from mlserving.learning.snapshots import (
    STATE_FILE,
    LoadedSnapshot,
    SnapshotStore,
    read_learner_state,
    serving_model,
)

log = logging.getLogger("mlserving.learning")

T = TypeVar("T")

MAX_UNPUBLISHED = 8
LISTED_SNAPSHOTS = 50  # the newest snapshots whose manifests the status lists
SUMMARY_FIELDS = (
    "version",
    "parent",
    "created",
    "samples",
    "metrics",
    "data_version",
    "data_seq_start",
    "data_seq_end",
    "estimator",
    "base_sha256",
    "lineage_root",
)

FEEDBACK_STATUS = {
    FeedbackOutcome.JOINED: 200,
    FeedbackOutcome.INVALID: 400,
    FeedbackOutcome.UNKNOWN: 404,
    FeedbackOutcome.DUPLICATE: 409,
    FeedbackOutcome.LATE: 410,
}


@dataclass(frozen=True)
class PipelineConfig:
    model_name: str
    metric_model: str = ""  # the ``model`` label of the metrics (default: model_name)
    snapshot_every: int = 1000
    batch_size: int = 32
    window: int = 500
    max_delay: float = 3600.0
    max_waiting_requests: int = 100_000
    label_field: str = "label"
    flush_interval: float = 0.1
    flush_rows: int = 4096
    ack_timeout: float = 10.0
    unknown_id_wait: float = 1.0
    max_unwritten_rows: int = 100_000
    retry_initial: float = 0.5
    drain_timeout: float = 5.0  # on stop, longest wait for queued rows to be written
    retry_max: float = 30.0
    base_sha256: str = ""  # of the initial model file; a snapshot of another base starts a new lineage
    hold_serving: bool = False  # promotion Canary: serving moves only with a pin, never by a publish
    keep_snapshots: int | None = None  # snapshots kept in storage (None: all); see SnapshotStore.prune

    @property
    def model_label(self) -> str:
        return self.metric_model or self.model_name


@dataclass(frozen=True)
class FeedbackAnswer:
    status: int
    outcome: str
    error: str = ""
    rows: int = 0
    data_version: int | None = None

    def body(self, response_id: str) -> dict[str, Any]:
        if self.error:
            return {"error": self.error, "outcome": self.outcome}
        return {
            "id": response_id,
            "outcome": self.outcome,
            "rows": self.rows,
            "data_version": self.data_version,
        }


class PinRefused(Exception):
    """A pin the learner will not set; ``status`` is the HTTP status that says why."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


def snapshot_summary(manifest: dict[str, Any]) -> dict[str, Any]:
    """What the status tells of one snapshot: its lineage, metrics and the data it learned from."""
    summary = {name: manifest.get(name) for name in SUMMARY_FIELDS}
    summary["format"] = (manifest.get("serving") or {}).get("format")
    return summary


@dataclass
class StorageHealth:
    available: bool = True
    last_error: str = ""
    errors: dict[str, int] = field(default_factory=dict)  # by operation


class LearningPipeline:
    def __init__(
        self,
        config: PipelineConfig,
        *,
        initial_estimator: Any,
        location: StorageLocation,
        key: bytes,
        clock: Callable[[], float] = time.time,
        datalog: DataLog | None = None,
        store: SnapshotStore | None = None,
    ) -> None:
        """``datalog`` and ``store`` default to those under ``location``."""
        self.config = config
        self.initial_estimator = initial_estimator
        self.location = location
        self.key = key
        self.clock = clock
        self.learner = OnlineLearner(initial_estimator, batch_size=config.batch_size, window=config.window)
        self.buffer = JoinBuffer(max_delay=config.max_delay, max_entries=config.max_waiting_requests)
        self.datalog = datalog or DataLog(
            location,
            n_features=self.learner.n_features,
            label_kind=self.learner.label_kind,
            name=config.model_name,
        )
        self.store = store or SnapshotStore(location, hold_serving=config.hold_serving)
        self.storage = StorageHealth()
        self.ready = False
        self.resume_error = ""
        self.refused_snapshots: list[str] = []
        self.snapshot_version: int | None = None
        self.serving_version: int | None = None
        self.pinned_version: int | None = None
        self.candidate_version: int | None = None
        self.lineage_root: int | None = None
        """The first snapshot of the lineage learned now (its initial model); never pruned."""
        self.snapshots: dict[int, dict[str, Any]] = {}  # summaries of the newest, by version
        self.rejected_records = 0
        self.skipped_snapshots = 0  # captures never published because newer ones were waiting
        self._next_version = 0
        self._next_snapshot_at = config.snapshot_every
        self._unwritten: list[JoinedRequest] = []
        self._unwritten_acks: list[tuple[asyncio.Future[Commit | None], float]] = []
        self._last_write = 0.0
        self._stopping = False
        self._unwritten_rows = 0
        self._written: deque[tuple[list[JoinedRequest], Commit]] = deque()
        self._captures: deque[LearnerCapture] = deque(maxlen=MAX_UNPUBLISHED)
        self._waiters: dict[str, list[asyncio.Future[None]]] = {}
        self._waiter_count = 0
        self._tasks: list[asyncio.Task[None]] = []
        self._rows_queued = asyncio.Event()
        self._flush_now = asyncio.Event()  # cuts the group-commit wait short
        self._rows_written = asyncio.Event()
        self._captured = asyncio.Event()

    # ---------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        self._tasks.append(asyncio.get_running_loop().create_task(self._run(), name="learner"))

    async def _run(self) -> None:
        self._queue_captures(await self._retrying("resume", lambda: asyncio.to_thread(self._resume)))
        self.ready = True
        loop = asyncio.get_running_loop()
        for name, body in (
            ("ack-timeout", self._ack_timeout_loop),
            ("writer", self._write_loop),
            ("trainer", self._train_loop),
            ("publisher", self._publish_loop),
        ):
            self._tasks.append(loop.create_task(body(), name=name))
        log.info(
            "learner ready: snapshot %s, %d samples learned, data version %s",
            self.snapshot_version,
            self.learner.samples,
            self.datalog.version,
        )

    async def stop(self) -> None:
        """Let the writer write the rows still queued (for up to ``drain_timeout``), then stop."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.drain_timeout
        self._stopping = True
        self._rows_queued.set()
        self._flush_now.set()
        # Only the writer appends: a second writer here could write an in-flight commit twice.
        while self.ready and self._unwritten and loop.time() < deadline:
            await asyncio.sleep(0.01)
        for ack, _ in self._unwritten_acks:
            if not ack.done():
                ack.set_result(None)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()

    # ---------------------------------------------------------------- request path

    def ingest(self, requests: list[LoggedRequest]) -> int:
        """Keep logged requests until their feedback arrives; returns how many were new."""
        now = self.clock()
        accepted = 0
        for request in requests:
            if self.buffer.add(request, now):
                accepted += 1
            waiting = self._waiters.pop(request.id, None)
            if waiting:
                self._waiter_count -= len(waiting)
                for future in waiting:
                    if not future.done():
                        future.set_result(None)
        return accepted

    async def feedback_batch(self, items: list[tuple[str, Any]]) -> list[FeedbackAnswer]:
        """Several feedbacks at once (from a forwarder); their rows share the commits they wait for."""
        return list(
            await asyncio.gather(*(self.feedback(response_id, label) for response_id, label in items))
        )

    async def feedback(self, response_id: str, label: Any) -> FeedbackAnswer:
        if not self.ready:
            reason = self.resume_error or "resuming from the last snapshot and the data log"
            return FeedbackAnswer(503, "unavailable", f"learner: not ready ({reason})")
        if self._unwritten_rows >= self.config.max_unwritten_rows:
            return FeedbackAnswer(
                503,
                "unavailable",
                f"storage: {self._unwritten_rows} rows wait to be written ({self.storage.last_error})",
            )
        if not self.buffer.knows(response_id):
            # The replica's log batch may still be on its way: feedback can overtake its request.
            await self._wait_logged(response_id)
        check = functools.partial(self.learner.check_labels, field=self.config.label_field)
        result = self.buffer.join(response_id, label, self.clock(), check)
        if result.outcome is not FeedbackOutcome.JOINED or result.joined is None:
            return FeedbackAnswer(FEEDBACK_STATUS[result.outcome], result.outcome.value, result.error)
        commit = await self._queue_row(result.joined)
        if commit is None:
            return FeedbackAnswer(
                503,
                "unavailable",
                f"storage: the labelled row is queued but not yet written ({self.storage.last_error or 'slow storage'}); "
                "it is written when storage answers, and sending this feedback again answers 409",
            )
        return FeedbackAnswer(
            200, FeedbackOutcome.JOINED.value, rows=result.joined.request.rows, data_version=commit.version
        )

    async def _wait_logged(self, response_id: str) -> None:
        if self.config.unknown_id_wait <= 0 or self._waiter_count >= self.config.max_waiting_requests:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(response_id, []).append(future)
        self._waiter_count += 1
        try:
            await asyncio.wait_for(future, self.config.unknown_id_wait)
        except TimeoutError:
            waiting = self._waiters.get(response_id)
            if waiting and future in waiting:
                waiting.remove(future)
                self._waiter_count -= 1
                if not waiting:
                    del self._waiters[response_id]

    def _queue_row(self, joined: JoinedRequest) -> asyncio.Future[Commit | None]:
        """A future of the commit that wrote the row; None once ``ack_timeout`` passed without one."""
        ack: asyncio.Future[Commit | None] = asyncio.get_running_loop().create_future()
        self._unwritten.append(joined)
        self._unwritten_acks.append((ack, time.monotonic()))
        self._unwritten_rows += joined.request.rows
        self._rows_queued.set()
        if self._unwritten_rows >= self.config.flush_rows:
            self._flush_now.set()
        return ack

    async def _ack_timeout_loop(self) -> None:
        """Answer the feedback whose row waits longer than ``ack_timeout`` (storage slow or down).

        One sweep for all rows costs less than a timer per feedback; the rows stay queued.
        """
        timeout = self.config.ack_timeout
        while True:
            await asyncio.sleep(min(0.5, timeout / 4))
            overdue = time.monotonic() - timeout
            for ack, queued_at in self._unwritten_acks:
                if queued_at > overdue:
                    break
                if not ack.done():
                    ack.set_result(None)

    # ---------------------------------------------------------------- writer

    async def _write_loop(self) -> None:
        while True:
            await self._rows_queued.wait()
            # Group commit: at most one commit per flush interval unless enough rows wait, so
            # a lone feedback is written at once and a busy stream in few, larger commits.
            wait = self._last_write + self.config.flush_interval - time.monotonic()
            if wait > 0 and self._unwritten_rows < self.config.flush_rows and not self._stopping:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._flush_now.wait(), wait)
            if not self._stopping:
                self._flush_now.clear()
            self._last_write = time.monotonic()
            await self._retrying("append", self._write_queued)

    async def _write_queued(self) -> None:
        # Copies: rows queued while the append runs wait for the next commit.
        rows, acks = list(self._unwritten), list(self._unwritten_acks)
        if not rows:
            self._rows_queued.clear()
            return
        commit = await asyncio.to_thread(self.datalog.append, rows)
        # Only now leave the queue: a failed append keeps them for the retry, in order.
        self._unwritten, self._unwritten_acks = (
            self._unwritten[len(rows) :],
            self._unwritten_acks[len(acks) :],
        )
        self._unwritten_rows -= commit.seq_end - commit.seq_start
        if not self._unwritten:
            self._rows_queued.clear()
        for ack, _ in acks:
            if not ack.done():
                ack.set_result(commit)
        self._written.append((rows, commit))
        self._rows_written.set()

    # ---------------------------------------------------------------- trainer

    async def _train_loop(self) -> None:
        while True:
            await self._rows_written.wait()
            self._rows_written.clear()
            batches = list(self._written)
            self._written.clear()
            self._queue_captures(await asyncio.to_thread(self._learn_written, batches))

    def _queue_captures(self, captures: list[LearnerCapture]) -> None:
        if captures:
            self.skipped_snapshots += max(0, len(self._captures) + len(captures) - MAX_UNPUBLISHED)
            self._captures.extend(captures)
            self._captured.set()

    @property
    def unpublished_snapshots(self) -> int:
        return len(self._captures)

    def _learn_written(self, batches: list[tuple[list[JoinedRequest], Commit]]) -> list[LearnerCapture]:
        for rows, commit in batches:
            features = np.concatenate([j.request.features for j in rows])
            labels = [label for j in rows for label in j.labels]
            self.learner.add(features, labels, np.arange(commit.seq_start, commit.seq_end), commit.version)
        return self._learn_pending()

    def _learn_pending(self) -> list[LearnerCapture]:
        """Learn every whole batch queued; capture the learner each time it passes a snapshot boundary."""
        captures = []
        while True:
            budget = max(1, self._next_snapshot_at - self.learner.samples)
            learned = self.learner.step(max_samples=budget)
            if self.learner.samples >= self._next_snapshot_at:
                captures.append(self.learner.capture())
                self._next_snapshot_at = self.learner.samples + self.config.snapshot_every
            if not learned:
                return captures

    # ---------------------------------------------------------------- publisher

    async def _publish_loop(self) -> None:
        while True:
            await self._captured.wait()
            self._captured.clear()
            while self._captures:
                await self._retrying("publish", self._publish_oldest)

    async def _publish_oldest(self) -> None:
        if not self._captures:
            return
        capture = self._captures[0]
        version, parent = self._next_version, self.snapshot_version
        if await asyncio.to_thread(self.store.exists, version):
            # An earlier attempt wrote this snapshot's manifest but failed to move ``latest``.
            await asyncio.to_thread(self.store.point_latest, version)
            serving = await asyncio.to_thread(self.store.sync_serving)
            self.snapshot_version, self._next_version = version, version + 1
            self.serving_version = serving
            return
        await asyncio.to_thread(self._publish, capture, version, parent)
        if self._captures and self._captures[0] is capture:
            self._captures.popleft()
        self.snapshot_version, self._next_version = version, version + 1
        if self.pinned_version is None and not self.store.hold_serving:
            # on the loop, as pins are: the two never interleave
            self.serving_version = version
        await self._prune()

    async def _prune(self) -> None:
        """Delete the snapshots beyond ``keep_snapshots``; a failure is logged, never fatal (the
        next publish tries again)."""
        keep = self.config.keep_snapshots
        if keep is None:
            return
        protected = {self.pinned_version, self.serving_version, self.candidate_version, self.lineage_root}
        try:
            roots = {
                v: s["lineage_root"] for v, s in self.snapshots.items() if s.get("lineage_root") is not None
            }
            pruned = await asyncio.to_thread(
                self.store.prune, keep, {v for v in protected if v is not None}, self.key, roots
            )
        except Exception as exc:
            log.warning("snapshot retention: %s: %s", type(exc).__name__, exc)
            return
        for version in pruned:
            self.snapshots.pop(version, None)
        if pruned:
            log.info("deleted snapshots %s (keeping the newest %d)", pruned, keep)

    def _publish(self, capture: LearnerCapture, version: int, parent: int | None) -> dict[str, Any]:
        import skops.io as sio

        started = time.perf_counter()
        name, model_bytes, serving = serving_model(capture.estimator)
        fields = {
            "model": self.config.model_name,
            "parent": parent,
            "created": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "samples": capture.samples,
            "metrics": finite_metrics(capture.metrics),
            "window": self.config.window,
            "batch_size": self.learner.batch_size,
            "data_version": capture.data_version,
            "data_seq_start": capture.lineage_start,
            "data_seq_end": capture.learned_seq,
            "estimator": type(capture.estimator).__name__,
            "base_sha256": self.config.base_sha256,
            "lineage_root": self.lineage_root,
            "serving": serving,
        }
        manifest = self.store.publish(
            version, {name: model_bytes, STATE_FILE: sio.dumps(capture.state)}, fields, self.key
        )
        self._listed(manifest)
        log.info(
            "published snapshot %d (%d samples, data version %s, %s) in %.0f ms",
            version,
            capture.samples,
            capture.data_version,
            serving["format"],
            (time.perf_counter() - started) * 1000,
        )
        return manifest

    # ---------------------------------------------------------------- resume

    def _resume(self) -> list[LearnerCapture]:
        """Restore the learner and replay the log; returns the captures due for publishing."""
        self.datalog.open()
        self.refused_snapshots = []
        versions = self.store.versions()
        self._next_version = versions[-1] + 1 if versions else 0
        resumed = self._resume_from_snapshot(versions)
        if resumed is not None and self.learner.learned_seq > self.datalog.next_seq:
            # The data log lost rows the snapshot learned (deleted or replaced): number new rows
            # after what is there, or they would never be learned.
            log.error(
                "the data log ends at seq %d but snapshot %d learned up to %d; continuing from the log's end",
                self.datalog.next_seq,
                resumed,
                self.learner.learned_seq,
            )
            self.learner.learned_seq = self.learner.lineage_start = self.datalog.next_seq
        if resumed is None:
            self.learner = OnlineLearner(
                self.initial_estimator,
                batch_size=self.config.batch_size,
                window=self.config.window,
                learned_seq=self.datalog.next_seq,
            )
            version = self._next_version
            self.lineage_root = version
            self._publish(self.learner.capture(), version, None)
            self.snapshot_version, self._next_version = version, version + 1
        else:
            self.lineage_root = self._root_of(resumed)
        self._next_snapshot_at = self.learner.samples + self.config.snapshot_every
        self._read_pointers(versions)
        # Ids the log already holds: feedback sent again after a restart (its answer was lost with
        # the process) answers 409 instead of being written a second time.
        self.buffer.remember_joined(self.datalog.recent_request_ids(self.config.max_waiting_requests))
        return self._replay()

    def _resume_from_snapshot(self, versions: list[int]) -> int | None:
        """Restore the newest verifiable snapshot of this base model; None when there is none."""
        for version in reversed(versions):
            try:
                with tempfile.TemporaryDirectory(prefix="mlserving-resume-") as tmp:
                    snapshot = self.store.load(version, self.key, dest_dir=tmp)
                    if snapshot.manifest.get("base_sha256", "") != self.config.base_sha256:
                        log.warning(
                            "snapshot %d learned from another initial model; starting a new lineage", version
                        )
                        return None
                    learner = self._restore(snapshot)
            except SnapshotError as exc:
                self.refused_snapshots.append(str(exc))
                log.error("cannot resume from snapshot %d: %s", version, exc)
                continue
            self.learner = learner
            self.snapshot_version = version
            return version
        return None

    def _root_of(self, version: int) -> int | None:
        """The lineage root of snapshot ``version`` (walking parents for a manifest without one)."""
        from mlserving.learning.export import lineage_root

        try:
            manifest = self.store.read_manifest(version, self.key)
            return int(lineage_root(self.store, self.key, manifest)["version"])
        except (SnapshotError, KeyError, ValueError) as exc:
            log.warning("the first snapshot of snapshot %d's lineage is unknown: %s", version, exc)
            return None

    def _restore(self, snapshot: LoadedSnapshot) -> OnlineLearner:
        try:
            state = read_learner_state(snapshot)
            return OnlineLearner.from_state(
                state, batch_size=self.config.batch_size, window=self.config.window
            )
        except Exception as exc:
            raise SnapshotError(f"snapshot {snapshot.version}: unusable learner state: {exc}") from None

    def _replay(self) -> list[LearnerCapture]:
        """Learn the rows written after the restored state (those it had not learned yet)."""
        rows = self.datalog.read_rows(seq_start=self.learner.learned_seq)
        if len(rows) == 0:
            return []
        version = self.datalog.version if self.datalog.version is not None else 0
        self.learner.add(rows.features, rows.label, rows.seq, version)
        log.info("replaying %d rows from the data log", len(rows))
        return self._learn_pending()

    # ---------------------------------------------------------------- pin

    def _read_pointers(self, versions: list[int]) -> None:
        """The pin and the serving pointer as stored, and the manifests the status lists."""
        self.pinned_version = self.store.pinned()
        self.candidate_version = self.store.candidate()
        self.serving_version = self.store.sync_serving()
        for version in versions[-LISTED_SNAPSHOTS:]:
            if version in self.snapshots:
                continue
            try:
                self._listed(self.store.read_manifest(version, self.key))
            except SnapshotError as exc:
                log.warning("snapshot %d is not listed: %s", version, exc)

    def _listed(self, manifest: dict[str, Any]) -> None:
        self.snapshots[int(manifest["version"])] = snapshot_summary(manifest)
        for old in sorted(self.snapshots)[:-LISTED_SNAPSHOTS]:
            del self.snapshots[old]

    async def pin(self, version: int | None) -> int | None:
        """Serve snapshot ``version`` from now on (None: follow the newest again); returns the
        snapshot served. PinRefused: 404 unknown, 409 refused by its signature, 503 not ready or
        storage down. The pin is stored, so it outlives restarts of the learner and replicas."""
        if not self.ready:
            raise PinRefused(503, "learner: not ready; ask again once it has resumed")
        try:
            if version is not None:
                await asyncio.to_thread(self.store.read_manifest, version, self.key)
            serving = await asyncio.to_thread(self.store.pin, version)
        except SnapshotMissing:
            published = f"the newest is {self.snapshot_version}" if self.snapshot_version is not None else ""
            raise PinRefused(404, f"snapshot: {version} is not a published snapshot; {published}") from None
        except SnapshotError as exc:
            raise PinRefused(409, f"snapshot: {exc}") from None
        except Exception as exc:
            raise PinRefused(503, f"storage: {type(exc).__name__}: {exc}") from None
        self.pinned_version, self.serving_version = version, serving
        log.info(
            "serving %s", f"pinned to snapshot {version}" if version is not None else "follows the newest"
        )
        return serving

    async def set_candidate(self, version: int | None) -> None:
        """Serve snapshot ``version`` on the candidate-snapshot replicas of a canary (None: they
        serve what the others serve). PinRefused as :meth:`pin`."""
        if not self.ready:
            raise PinRefused(503, "learner: not ready; ask again once it has resumed")
        try:
            if version is not None:
                await asyncio.to_thread(self.store.read_manifest, version, self.key)
            await asyncio.to_thread(self.store.set_candidate, version)
        except SnapshotMissing:
            raise PinRefused(404, f"snapshot: {version} is not a published snapshot") from None
        except SnapshotError as exc:
            raise PinRefused(409, f"snapshot: {exc}") from None
        except Exception as exc:
            raise PinRefused(503, f"storage: {type(exc).__name__}: {exc}") from None
        self.candidate_version = version
        log.info("candidate snapshot %s", version if version is not None else "cleared")

    # ---------------------------------------------------------------- storage retries

    async def _retrying(self, operation: str, call: Callable[[], Awaitable[T]]) -> T:
        delay = self.config.retry_initial
        while True:
            try:
                result = await call()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                message = f"{operation}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
                self.storage.available = False
                self.storage.last_error = message
                self.storage.errors[operation] = self.storage.errors.get(operation, 0) + 1
                if operation == "resume":
                    self.resume_error = message
                log.warning("%s; retrying in %.1f s", message, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.config.retry_max)
                continue
            self.storage.available = True
            self.resume_error = "" if operation == "resume" else self.resume_error
            return result

    # ---------------------------------------------------------------- status

    @property
    def unwritten_rows(self) -> int:
        return self._unwritten_rows

    def status(self) -> dict[str, Any]:
        return {
            "model": self.config.model_name,
            "ready": self.ready,
            "samples": self.learner.samples,
            "pending_samples": self.learner.pending,
            "learned_seq": self.learner.learned_seq,
            "metrics": dict(self.learner.metrics),
            "snapshot_version": self.snapshot_version,
            "latest": self.snapshot_version,
            "serving": self.serving_version,
            "pinned": self.pinned_version,
            "candidate": self.candidate_version,
            "lineage": self.config.base_sha256,
            "snapshots": [self.snapshots[v] for v in sorted(self.snapshots)],
            "unpublished_snapshots": len(self._captures),
            "skipped_snapshots": self.skipped_snapshots,
            "data_version": self.datalog.version,
            "waiting_requests": len(self.buffer),
            "unwritten_rows": self._unwritten_rows,
            "join": self.buffer.stats.as_dict(),
            "rejected_records": self.rejected_records,
            "learn_errors": self.learner.errors,
            "last_learn_error": self.learner.last_error,
            "storage": {
                "available": self.storage.available,
                "last_error": self.storage.last_error,
                "errors": dict(self.storage.errors),
            },
            "refused_snapshots": list(self.refused_snapshots),
        }
