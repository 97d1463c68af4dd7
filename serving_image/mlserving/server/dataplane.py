"""The data plane of the model server: the models it holds and everything done with them.

It knows nothing of HTTP: ``mlserving.server.app`` translates REST requests into these calls, and
any other front end (in-process callers, another protocol) can make the same calls. Every model is
reached through ``lookup``, and ``_install`` is the one place that sets the model it returns, so
replacing a loaded model is one assignment; requests keep the model they looked up.

The model is fetched and loaded in a worker thread after ``start``: the data plane is live at once
and ready when the model is. A failed fetch or load keeps it live but not ready, or, with
``MLSERVING_EXIT_ON_REFUSED_MODEL=true`` (what the operator's pods set), ends the process with a
termination report (``ModelFetchFailed``, ``ModelLoadFailed`` or the refusal's reason).

Online learning (off unless configured): with a learner URL every inference is logged to the
learner and labelled feedback is forwarded to it (``mlserving.server.learner``); with a snapshot
storage URI the learner's signed snapshots are hot-loaded (``mlserving.server.hotload``) and
swapped in by ``swap``. A swapped-out model finishes the requests that looked it up; its batcher
is closed once they are done.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

import mlserving
from mlserving.feedback import CreditedIds, Feedback, credit_key
from mlserving.http import JSON_HEADERS, Headers
from mlserving.request_checks import ProtocolError
from mlserving.runtimes import ModelRuntime, open_model
from mlserving.runtimes.base import TensorSpec
from mlserving.runtimes.refusals import exit_if_refused_for_good
from mlserving.server.batching import Batcher
from mlserving.server.hotload import IncompatibleSnapshot, SnapshotHotLoader
from mlserving.server.ids import ResponseIds
from mlserving.server.learner import LearnerAnswer, LearnerLink
from mlserving.server.metrics import LearningMetrics, ServerMetrics
from mlserving.server.protocol import InferenceRequest, bind_inputs, check_outputs
from mlserving.settings import ServerSettings

CREDITED_FEEDBACK = 20_000
"""Feedbacks whose ids the server remembers (about 0.3 MB) to refuse the same one twice."""

log = logging.getLogger("mlserving.server")

State = Literal["loading", "ready", "failed", "stopping"]

SNAPSHOT_HEADER = b"x-mlrollouts-snapshot"
# How long a swapped-out model may take to finish its requests before its batcher is closed anyway.
RETIRE_TIMEOUT_SECONDS = 60.0

SERVER_METADATA: Mapping[str, Any] = {
    "name": "mlserving",
    "version": mlserving.__version__,
    "extensions": ["binary_tensor_data"],
}


@dataclass(eq=False, slots=True)
class ModelUsage:
    """Requests running on a model now: a swapped-out model is closed when none is left."""

    active: int = 0


@dataclass(frozen=True, eq=False, slots=True)
class LoadedModel:
    """A model ready to serve, with what the protocol reports about it."""

    name: str
    version: str
    runtime: ModelRuntime
    batcher: Batcher
    metadata: Mapping[str, Any]
    outputs: Mapping[str, TensorSpec]
    # The output counted in mlserving_predictions_total and remembered for labelled feedback.
    primary: str | None
    # The online learner's snapshot this model is (None: the model of ``model_uri``).
    snapshot: int | None = None
    # Headers of a successful inference response: ``snapshot_headers`` name the snapshot.
    snapshot_headers: Headers = ()
    response_headers: Headers = JSON_HEADERS
    usage: ModelUsage = field(default_factory=ModelUsage)

    @property
    def default_output(self) -> str:
        return self.primary or self.runtime.info.outputs[0].name


@dataclass(frozen=True, slots=True)
class FeedbackOutcome:
    reward: float | None  # given, or the share of correct labels when only a label was given
    correct: bool | None  # None when the served prediction is unknown or not comparable


class DataPlane:
    """Models by name, their readiness, inference and feedback (one model per server today)."""

    def __init__(
        self, settings: ServerSettings, metrics: ServerMetrics | None = None, arrivals: Any = None
    ) -> None:
        self.settings = settings
        self.model_name = settings.model_name
        self.version = settings.model_version
        self.metrics = metrics or ServerMetrics(settings.metric_model, settings.revision)
        self.ids = ResponseIds(settings.id_key, settings.id_cache_size)
        self.credited = CreditedIds(CREDITED_FEEDBACK)
        self.state: State = "loading"
        self.load_error: str | None = None
        self.native_fallback: str | None = None
        # Requests the front end took in (``started``) and has not answered yet (``inflight``);
        # with ``arrivals`` (requests parsed by the transport) they tell the batcher who is waiting.
        self.started = 0
        self.inflight = 0
        self.arrivals = arrivals
        self._model: LoadedModel | None = None
        self._load_task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        # Online learning: registered only when configured, so that nothing changes without it.
        self.learning_metrics: LearningMetrics | None = None
        if settings.learner_url or settings.snapshot_uri:
            self.learning_metrics = LearningMetrics(self.metrics.registry, self.metrics.model)
        self.learner = self._learner_link()

    def _learner_link(self) -> LearnerLink | None:
        s = self.settings
        if not s.learner_url:
            return None
        assert self.learning_metrics is not None
        return LearnerLink(
            s.learner_url,
            self.model_name,
            max_queue=s.learning_log_queue,
            max_batch=s.learning_log_batch,
            flush_interval=s.learning_log_flush_seconds,
            timeout=s.learner_timeout_seconds,
            metrics=self.learning_metrics,
            registry=self.metrics.registry,
        )

    # ---------------------------------------------------------------- lookup

    def lookup(self, name: str, version: str | None = None) -> LoadedModel | None:
        """The model served under ``name`` (and ``version``) now; None while none is loaded.

        Raises 404 for a name or version this server does not serve. Callers keep the object they
        got for the whole request, so a model replaced meanwhile finishes the requests it started.
        """
        if name != self.model_name:
            raise ProtocolError(f"unknown model {name!r}; this server serves {self.model_name!r}", 404)
        if version is not None and version != self.version:
            raise ProtocolError(
                f"unknown version {version!r} of model {name!r}; available: {self.version!r}", 404
            )
        return self._model

    def model(self, name: str, version: str | None = None) -> LoadedModel:
        """The model to run a request on; 503 with the reason while it is not ready.

        Pass it to ``infer`` in the same turn of the event loop: a model swapped out meanwhile is
        closed once the requests running on it (counted by ``infer``) are done.
        """
        model = self.lookup(name, version)
        if model is None or self.state != "ready":
            raise ProtocolError(self.not_ready_reason(), 503)
        return model

    def metadata(self, name: str, version: str | None = None) -> Mapping[str, Any]:
        model = self.lookup(name, version)
        if model is None:
            raise ProtocolError(self.not_ready_reason(), 503)
        return model.metadata

    @property
    def ready(self) -> bool:
        return self.state == "ready"

    def not_ready_reason(self) -> str:
        if self.state == "loading":
            return f"model {self.model_name!r} is loading"
        if self.state == "failed":
            return f"model {self.model_name!r} failed to load: {self.load_error}"
        if self.state == "stopping":
            return "server is shutting down"
        return f"model {self.model_name!r} is not ready"

    # ---------------------------------------------------------------- inference

    async def infer(self, model: LoadedModel, request: InferenceRequest) -> tuple[str, dict[str, np.ndarray]]:
        """Run ``request`` (merged with concurrent ones by the batcher): its response id and outputs."""
        inputs = bind_inputs(request.inputs, model.runtime.info.inputs, model.name)
        check_outputs(request.outputs, model.outputs, model.name)
        model.usage.active += 1
        try:
            results = await model.batcher.predict(inputs, request.outputs)
        finally:
            model.usage.active -= 1
        response_id = request.id or self.ids.new()
        self._observe(model, response_id, results)
        if self.learner is not None:
            self.learner.log(response_id, inputs, results.get(model.default_output), model.snapshot)
        return response_id, results

    def _observe(self, model: LoadedModel, response_id: str, results: dict[str, np.ndarray]) -> None:
        primary = model.primary
        value = results.get(primary) if primary else None
        if value is None:
            self.ids.remember(response_id, None)
            return
        self.metrics.observe_predictions(primary, value)  # type: ignore[arg-type]
        # One row: keep the scalar (small); a few rows: the list; large batches: nothing.
        remembered = value.tolist() if value.size <= 64 else None
        if isinstance(remembered, list) and len(remembered) == 1:
            remembered = remembered[0]
        self.ids.remember(response_id, remembered)

    def waiting(self) -> int:
        """Other requests behind the current one: parsed but not started, or started and unfinished."""
        queued = self.arrivals.count - self.started if self.arrivals is not None else 0
        return max(0, queued) + self.inflight - 1

    # ---------------------------------------------------------------- feedback

    async def forward_feedback(self, name: str, feedback: Feedback) -> LearnerAnswer | None:
        """Send a label to the learner; None when there is no label or no learner."""
        self.lookup(name)
        if self.learner is None or not feedback.has_label:
            return None
        return await self.learner.forward_feedback(feedback.id, feedback.label)

    def refuse_if_credited(self, feedback: Feedback) -> None:
        """409 for feedback this server has already counted (a reward, or a label alone): a client
        that sends it again after a lost answer does not count twice."""
        if credit_key(feedback) in self.credited:
            kind = "a reward" if feedback.reward is not None else "a label"
            raise ProtocolError(f"{kind} for response {feedback.id!r} was already counted", 409)

    def feedback(self, name: str, feedback: Feedback, *, learner_accepted: bool = False) -> FeedbackOutcome:
        """Credit feedback on a response of this server; 404 for an id it did not produce.

        Feedback the learner accepted (``learner_accepted``) is counted even when this replica did
        not serve the response: another replica did, and the learner knows its id.
        """
        self.lookup(name)
        known, prediction = self.ids.lookup(feedback.id)
        self.refuse_if_credited(feedback)
        if not known and learner_accepted:
            self.metrics.observe_feedback(feedback.reward, None)
            self.credited.add(credit_key(feedback))
            return FeedbackOutcome(feedback.reward, None)
        if not known:
            raise ProtocolError(
                f"'id' {feedback.id!r} was not produced by this server (or left its cache of the "
                f"{self.ids.cache_size} most recent responses)",
                404,
            )
        reward = feedback.reward
        correct: bool | None = None
        if feedback.has_label and prediction is not None:
            predicted = prediction if isinstance(prediction, list) else [prediction]
            given = feedback.label if isinstance(feedback.label, list) else [feedback.label]
            if len(given) == len(predicted):
                hits = sum(str(a) == str(b) for a, b in zip(given, predicted, strict=True))
                correct = hits == len(given)
                if reward is None:
                    reward = hits / len(given)
        self.metrics.observe_feedback(reward, correct)
        self.credited.add(credit_key(feedback))
        return FeedbackOutcome(reward, correct)

    # ---------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        """Begin fetching and loading the model in the background (then following snapshots)."""
        hot_loader = self._hot_loader()  # first: a bad key file fails the start-up
        if self.learner is not None:
            await self.learner.start()
        self._load_task = asyncio.get_running_loop().create_task(self._load())
        if hot_loader is not None:
            self._spawn(self._follow_snapshots(self._load_task, hot_loader))

    async def stop(self) -> None:
        if self.state == "ready":
            self.state = "stopping"
        if self._load_task is not None and not self._load_task.done():
            self._load_task.cancel()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self.metrics.ready_child.set(0)
        if self._model is not None:
            self._model.batcher.close()
            self._model.runtime.unload()
        if self.learner is not None:
            await self.learner.close(drain_timeout=min(5.0, self.settings.shutdown_timeout_seconds))

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ---------------------------------------------------------------- snapshots

    def _hot_loader(self) -> SnapshotHotLoader | None:
        s = self.settings
        if not s.snapshot_uri:
            return None
        from mlserving.learning.follower import SnapshotFollower, open_snapshot_model
        from mlserving.learning.manifest import SnapshotError, read_key_file

        assert s.snapshot_key_file and self.learning_metrics is not None
        try:
            key = read_key_file(s.snapshot_key_file)
        except SnapshotError as exc:
            raise ValueError(f"snapshot_key_file: {exc}") from None
        downloads = Path(s.download_dir) / "snapshots" if s.download_dir else None
        try:
            follower = SnapshotFollower(
                s.snapshot_uri,
                key,
                storage_options=s.learning_storage_options,
                download_dir=downloads,
                pointer=s.snapshot_pointer,
            )
        except ValueError as exc:
            raise ValueError(f"snapshot_uri: {exc}") from None

        def open_runtime(snapshot: Any) -> ModelRuntime:
            threads = {"intra_op_threads": s.intra_op_threads, "inter_op_threads": s.inter_op_threads}
            return open_snapshot_model(snapshot, **threads)  # type: ignore[no-any-return]

        return SnapshotHotLoader(
            follower,
            open_runtime=open_runtime,
            swap=self.swap,
            metrics=self.learning_metrics,
            interval=s.snapshot_poll_seconds,
            pinned=s.pinned_snapshot,
        )

    async def _follow_snapshots(self, initial_load: asyncio.Task[None], loader: SnapshotHotLoader) -> None:
        # After the model of ``model_uri``: it must never replace a snapshot already swapped in.
        await asyncio.wait([initial_load])
        await loader.run()

    def swap(self, runtime: ModelRuntime, snapshot: int) -> None:
        """Serve ``runtime`` (snapshot ``snapshot``) from now on; IncompatibleSnapshot when its
        inputs or outputs differ from the served model's (clients would break)."""
        current = self._model
        if current is not None:
            problem = _interface_change(current.runtime, runtime)
            if problem:
                raise IncompatibleSnapshot(f"snapshot {snapshot}: {problem}")
        self._install(self._loaded(runtime, snapshot))
        if current is not None:
            self._spawn(self._retire(current))

    async def _retire(self, model: LoadedModel) -> None:
        """Close a swapped-out model once the requests that looked it up are done."""
        deadline = time.monotonic() + RETIRE_TIMEOUT_SECONDS
        try:
            while model.usage.active and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            if model.usage.active:
                log.warning("closing a swapped-out model with %d requests running", model.usage.active)
        finally:
            model.batcher.close()
            model.runtime.unload()

    async def _load(self) -> None:
        started = time.perf_counter()
        loop = asyncio.get_running_loop()
        try:
            runtime = await loop.run_in_executor(None, self._open_model)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.state = "failed"
            self.load_error = str(exc)
            self.metrics.load_failures_child.inc()
            log.error(
                "model %s not loaded: %s",
                self.model_name,
                exc,
                extra={"model_uri": self.settings.model_uri, "error_type": type(exc).__name__},
            )
            # a refusal, failed fetch or failed load ends the container with a report, when asked
            exit_if_refused_for_good(exc, model=self.settings.model_uri)
            return
        self._install(self._loaded(runtime))
        elapsed = time.perf_counter() - started
        self.metrics.load_seconds_child.set(elapsed)
        log.info(
            "model %s ready",
            self.model_name,
            extra={
                "load_seconds": round(elapsed, 3),
                "platform": runtime.info.platform,
                "native_fallback": self.native_fallback,
            },
        )

    def _open_model(self) -> ModelRuntime:
        from mlserving.server.compiling import fetch, load_options

        path = fetch(self.settings)
        return open_model(path, load_options(self.settings), on_fallback=self._on_fallback).runtime

    def _on_fallback(self, reason: str) -> None:
        self.native_fallback = reason
        category = "disabled" if "disabled" in reason else "mismatch" if "differ" in reason else "unsupported"
        self.metrics.native_fallback.labels(self.metrics.model, self.metrics.revision, category).inc()

    def _loaded(self, runtime: ModelRuntime, snapshot: int | None = None) -> LoadedModel:
        info = runtime.info
        properties = {k: str(v) for k, v in info.properties.items()}
        properties["task"] = info.task
        if self.native_fallback:
            properties["native_fallback"] = self.native_fallback
        metadata = {
            "name": self.model_name,
            "versions": [self.version],
            "platform": info.platform,
            "inputs": [i.as_metadata() for i in info.inputs],
            "outputs": [o.as_metadata() for o in info.outputs],
            "properties": properties,
        }
        batcher = Batcher(
            runtime,
            max_batch=self.settings.max_batch_size,
            max_wait=self.settings.max_batch_wait_ms / 1000.0,
            waiting=self.waiting,
            on_call=self.metrics.batch_child.observe,
        )
        outputs = {o.name: o for o in info.outputs}
        named: Headers = () if snapshot is None else ((SNAPSHOT_HEADER, str(snapshot).encode()),)
        return LoadedModel(
            self.model_name,
            self.version,
            runtime,
            batcher,
            metadata,
            outputs,
            info.primary_output,
            snapshot,
            named,
            (*JSON_HEADERS, *named),
        )

    def _install(self, model: LoadedModel) -> None:
        first = self._model is None
        self._model = model
        if first:
            # Everything allocated so far lives for the whole process: keep it out of the
            # collector's generations so that collections during requests stay short (tail
            # latency). Not on later swaps: a full collection would stall the requests in flight,
            # and a frozen swapped-out model would never be collected.
            gc.collect()
            gc.freeze()
            _release_free_memory()
        self.state = "ready"
        self.metrics.ready_child.set(1)


def _interface_change(served: ModelRuntime, new: ModelRuntime) -> str:
    """What a client would notice when ``new`` replaced ``served``; empty when nothing."""
    old_in = {(t.name, t.shape[1:]) for t in served.info.inputs}
    new_in = {(t.name, t.shape[1:]) for t in new.info.inputs}
    if old_in != new_in:
        return f"its inputs {sorted(new_in)} differ from the served model's {sorted(old_in)}"
    old_out = {t.name for t in served.info.outputs}
    new_out = {t.name for t in new.info.outputs}
    if old_out != new_out:
        return f"its outputs {sorted(new_out)} differ from the served model's {sorted(old_out)}"
    return ""


def _release_free_memory() -> None:
    """Give the heap freed after loading (file buffers, conversion scratch) back to the OS."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
