"""The model server as a plain ASGI application (no framework on the hot path).

Endpoints: Open Inference Protocol REST (``/v2/health/live|ready``, ``/v2``, ``/v2/models/{m}``,
``/v2/models/{m}/versions/{v}``, ``.../ready``, ``.../infer``), feedback
(``POST /v2/models/{m}/feedback``), KServe V1 (``/v1/models``, ``/v1/models/{m}``,
``/v1/models/{m}:predict``) and ``/metrics``. Every error answer is ``{"error": "..."}``.

The model is fetched and loaded in a worker thread after start-up: the server is live at once and
ready when the model is; a failed fetch or load keeps it live but not ready.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import math
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import numpy as np
import orjson

import mlserving
from mlserving.runtimes import LoadOptions, ModelRuntime, open_model
from mlserving.server.batching import Batcher
from mlserving.server.ids import ResponseIds
from mlserving.server.metrics import ServerMetrics
from mlserving.server.protocol import (
    ProtocolError,
    RequestTensor,
    bind_inputs,
    check_outputs,
    decode_request,
    encode_binary,
    encode_output,
    to_array,
)
from mlserving.settings import ServerSettings
from mlserving.storage import FetchError, fetch_model

log = logging.getLogger("mlserving.server")

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

_JSON = [(b"content-type", b"application/json")]
_NUMPY = orjson.OPT_SERIALIZE_NUMPY
_STATUS_TEXT = {
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    413: "Payload Too Large",
    503: "Service Unavailable",
}


class HttpError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _error_body(message: str) -> bytes:
    return orjson.dumps({"error": message})


class InferenceServer:
    """ASGI application serving one model."""

    def __init__(
        self, settings: ServerSettings, metrics: ServerMetrics | None = None, arrivals: Any = None
    ) -> None:
        self.settings = settings
        self.model_name = settings.model_name
        self.version = settings.model_version
        self.metrics = metrics or ServerMetrics(settings.metric_model, settings.revision)
        self.ids = ResponseIds(settings.id_key, settings.id_cache_size)
        self.runtime: ModelRuntime | None = None
        self.batcher: Batcher | None = None
        self.state = "loading"
        self.load_error: str | None = None
        self.native_fallback: str | None = None
        self.inflight = 0
        self.started = 0  # HTTP requests handed to the application (see waiting())
        self.arrivals = arrivals
        self._load_task: asyncio.Task[None] | None = None
        self._metadata: bytes = b""
        self._outputs: dict[str, Any] = {}
        self._primary: str | None = None
        base = f"/v2/models/{self.model_name}"
        self._infer_paths = {f"{base}/infer", f"{base}/versions/{self.version}/infer"}
        self._v1_predict = f"/v1/models/{self.model_name}:predict"

    # ---------------------------------------------------------------- lifecycle

    def waiting(self) -> int:
        """Other requests behind the current one: parsed but not started, or started and unfinished."""
        queued = self.arrivals.count - self.started if self.arrivals is not None else 0
        return max(0, queued) + self.inflight - 1

    @property
    def ready(self) -> bool:
        return self.state == "ready"

    async def startup(self) -> None:
        self._load_task = asyncio.get_running_loop().create_task(self._load())

    async def shutdown(self) -> None:
        if self.state == "ready":
            self.state = "stopping"
        if self._load_task is not None and not self._load_task.done():
            self._load_task.cancel()
        self.metrics.ready_child.set(0)
        if self.batcher is not None:
            self.batcher.close()
        if self.runtime is not None:
            self.runtime.unload()

    async def _load(self) -> None:
        started = time.perf_counter()
        loop = asyncio.get_running_loop()
        try:
            runtime = await loop.run_in_executor(None, self._load_sync)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.state = "failed"
            self.load_error = str(exc)
            self.metrics.load_failures_child.inc()
            log.error(
                "model %s not loaded, server stays live but not ready: %s",
                self.model_name,
                exc,
                extra={"model_uri": self.settings.model_uri, "error_type": type(exc).__name__},
            )
            return
        self._install(runtime)
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

    def _load_sync(self) -> ModelRuntime:
        s = self.settings
        try:
            path = fetch_model(
                s.model_uri,
                download_dir=s.download_dir,
                sha256=s.model_sha256,
                max_bytes=s.max_model_bytes,
                timeout=s.fetch_timeout_seconds,
                s3_endpoint_url=s.s3_endpoint_url,
            )
        except FetchError as exc:
            raise FetchError(f"fetch failed: {exc}") from None
        options = LoadOptions(
            format=s.format,
            allow_unsafe_pickle=s.allow_unsafe_pickle,
            trusted_types=tuple(s.trusted_type_list),
            compile=s.compile,
            compile_tolerance=s.compile_tolerance,
            compile_cache_dir=s.compile_cache_dir,
            intra_op_threads=s.intra_op_threads,
            inter_op_threads=s.inter_op_threads,
        )
        result = open_model(path, options, on_fallback=self._on_fallback)
        return result.runtime

    def _on_fallback(self, reason: str) -> None:
        self.native_fallback = reason
        category = "disabled" if "disabled" in reason else "mismatch" if "differ" in reason else "unsupported"
        self.metrics.native_fallback.labels(self.metrics.model, self.metrics.revision, category).inc()

    def _install(self, runtime: ModelRuntime) -> None:
        info = runtime.info
        self._outputs = {o.name: o for o in info.outputs}
        self._primary = info.primary_output
        properties = {k: str(v) for k, v in info.properties.items()}
        properties["task"] = info.task
        if self.native_fallback:
            properties["native_fallback"] = self.native_fallback
        self._metadata = orjson.dumps(
            {
                "name": self.model_name,
                "versions": [self.version],
                "platform": info.platform,
                "inputs": [i.as_metadata() for i in info.inputs],
                "outputs": [o.as_metadata() for o in info.outputs],
                "properties": properties,
            }
        )
        self.batcher = Batcher(
            runtime,
            max_batch=self.settings.max_batch_size,
            max_wait=self.settings.max_batch_wait_ms / 1000.0,
            waiting=self.waiting,
            on_call=self.metrics.batch_child.observe,
        )
        self.runtime = runtime
        # Everything allocated so far lives for the whole process: keep it out of the collector's
        # generations so that collections during requests stay short (tail latency).
        gc.collect()
        gc.freeze()
        _release_free_memory()
        self.state = "ready"
        self.metrics.ready_child.set(1)

    # ---------------------------------------------------------------- ASGI

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await self.startup()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.started += 1
        path: str = scope["path"]
        method: str = scope["method"]
        if method == "POST" and (path in self._infer_paths):
            await self._timed(self._infer, scope, receive, send)
            return
        try:
            await self._route(path, method, scope, receive, send)
        except HttpError as exc:
            await _send(send, exc.status, _error_body(exc.message))
        except ProtocolError as exc:
            await _send(send, exc.status, _error_body(exc.message))

    async def _route(self, path: str, method: str, scope: Scope, receive: Receive, send: Send) -> None:
        parts = path.strip("/").split("/")
        if not parts[0]:
            raise HttpError(404, f"no route for {path}; the API lives under /v2 and /v1")
        if parts[0] == "v2":
            if len(parts) == 1:
                _allow(method, "GET", path)
                await _send(send, 200, self._server_metadata())
                return
            if parts[1] == "health" and len(parts) == 3 and parts[2] in ("live", "ready"):
                _allow(method, "GET", path)
                if parts[2] == "live":
                    await _send(send, 200, b'{"live":true}')
                elif self.ready:
                    await _send(send, 200, b'{"ready":true}')
                else:
                    await _send(send, 503, orjson.dumps({"ready": False, "error": self._not_ready_reason()}))
                return
            if parts[1] == "models" and len(parts) >= 3:
                await self._model_route(parts[2:], method, path, scope, receive, send)
                return
        elif parts[0] == "v1" and len(parts) >= 2 and parts[1] == "models":
            await self._v1_route(parts[2:], method, path, scope, receive, send)
            return
        elif parts == ["metrics"]:
            _allow(method, "GET", path)
            await self._send_metrics(send)
            return
        raise HttpError(404, f"no route for {path}")

    async def _model_route(
        self, rest: list[str], method: str, path: str, scope: Scope, receive: Receive, send: Send
    ) -> None:
        self._check_model(rest[0])
        tail = rest[1:]
        if len(tail) >= 2 and tail[0] == "versions":
            self._check_version(tail[1])
            tail = tail[2:]
        if not tail:
            _allow(method, "GET", path)
            if not self._metadata:
                raise HttpError(503, self._not_ready_reason())
            await _send(send, 200, self._metadata)
        elif tail == ["ready"]:
            _allow(method, "GET", path)
            if self.ready:
                await _send(send, 200, orjson.dumps({"name": self.model_name, "ready": True}))
            else:
                body = {"name": self.model_name, "ready": False, "error": self._not_ready_reason()}
                await _send(send, 503, orjson.dumps(body))
        elif tail == ["infer"]:
            _allow(method, "POST", path)
            await self._timed(self._infer, scope, receive, send)
        elif tail == ["feedback"] and len(rest) == 2:
            _allow(method, "POST", path)
            await self._feedback(scope, receive, send)
        else:
            raise HttpError(404, f"no route for {path}")

    async def _v1_route(
        self, rest: list[str], method: str, path: str, scope: Scope, receive: Receive, send: Send
    ) -> None:
        if not rest or rest == [""]:
            _allow(method, "GET", path)
            await _send(send, 200, orjson.dumps({"models": [self.model_name]}))
            return
        if len(rest) != 1:
            raise HttpError(404, f"no route for {path}")
        name, sep, verb = rest[0].partition(":")
        self._check_model(name)
        if not sep:
            _allow(method, "GET", path)
            await _send(send, 200, orjson.dumps({"name": self.model_name, "ready": self.ready}))
        elif verb == "predict":
            _allow(method, "POST", path)
            await self._timed(self._v1_predict_handler, scope, receive, send)
        else:
            raise HttpError(404, f"unknown verb {verb!r} (V1 supports :predict)")

    def _check_model(self, name: str) -> None:
        if name != self.model_name:
            raise HttpError(404, f"unknown model {name!r}; this server serves {self.model_name!r}")

    def _check_version(self, version: str) -> None:
        if version != self.version:
            raise HttpError(
                404, f"unknown version {version!r} of model {self.model_name!r}; available: {self.version!r}"
            )

    def _not_ready_reason(self) -> str:
        if self.state == "loading":
            return f"model {self.model_name!r} is loading"
        if self.state == "failed":
            return f"model {self.model_name!r} failed to load: {self.load_error}"
        if self.state == "stopping":
            return "server is shutting down"
        return f"model {self.model_name!r} is not ready"

    def _server_metadata(self) -> bytes:
        return orjson.dumps(
            {"name": "mlserving", "version": mlserving.__version__, "extensions": ["binary_tensor_data"]}
        )

    async def _send_metrics(self, send: Send) -> None:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        body = generate_latest(self.metrics.registry)
        await _send(send, 200, body, [(b"content-type", CONTENT_TYPE_LATEST.encode())])

    # ---------------------------------------------------------------- inference

    async def _timed(
        self,
        handler: Callable[[Scope, Receive, Send], Awaitable[int]],
        scope: Scope,
        receive: Receive,
        send: Send,
    ) -> None:
        started = time.perf_counter()
        self.inflight += 1
        try:
            code = await handler(scope, receive, send)
        except HttpError as exc:
            code = exc.status
            await _send(send, code, _error_body(exc.message))
        except ProtocolError as exc:
            code = exc.status
            await _send(send, code, _error_body(exc.message))
        except Exception as exc:
            code = 500
            log.exception("inference failed")
            await _send(send, 500, _error_body(f"internal error: {type(exc).__name__}: {exc}"))
        finally:
            self.inflight -= 1
        self.metrics.observe_request(code, time.perf_counter() - started)

    async def _read_body(self, scope: Scope, receive: Receive) -> bytes:
        limit = self.settings.max_body_bytes
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    raise HttpError(400, "Content-Length header is not a number") from None
                if declared > limit:
                    raise HttpError(
                        413, f"request body of {declared} bytes is larger than the limit of {limit}"
                    )
        chunks = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise asyncio.CancelledError("client disconnected")
            chunk = message.get("body", b"")
            if chunk:
                size += len(chunk)
                if size > limit:
                    raise HttpError(413, f"request body is larger than the limit of {limit} bytes")
                chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def _require_ready(self) -> ModelRuntime:
        runtime = self.runtime
        if runtime is None or not self.ready or self.batcher is None:
            raise HttpError(503, self._not_ready_reason())
        return runtime

    async def _infer(self, scope: Scope, receive: Receive, send: Send) -> int:
        body = await self._read_body(scope, receive)
        runtime = self._require_ready()
        header_length = None
        for name, value in scope["headers"]:
            if name == b"inference-header-content-length":
                try:
                    header_length = int(value)
                except ValueError:
                    raise HttpError(400, "Inference-Header-Content-Length is not a number") from None
                if not 0 <= header_length <= len(body):
                    raise HttpError(400, "Inference-Header-Content-Length is larger than the body")
        json_part = body if header_length is None else body[:header_length]
        try:
            document = orjson.loads(json_part)
        except orjson.JSONDecodeError as exc:
            raise HttpError(400, f"malformed JSON: {exc}") from None
        request = decode_request(
            document,
            max_elements=self.settings.max_tensor_elements,
            allow_nan=self.settings.allow_nan,
            binary=None if header_length is None else body[header_length:],
        )
        info = runtime.info
        inputs = bind_inputs(request.inputs, info.inputs, self.model_name)
        check_outputs(request.outputs, self._outputs, self.model_name)
        assert self.batcher is not None
        results = await self.batcher.predict(inputs, request.outputs)
        response_id = request.id or self.ids.new()
        self._observe(response_id, results)
        outputs = [encode_output(name, value) for name, value in results.items()]
        response: dict[str, Any] = {
            "model_name": self.model_name,
            "model_version": self.version,
            "id": response_id,
            "outputs": outputs,
        }
        if request.parameters is not None:
            response["parameters"] = request.parameters
        if request.all_binary or request.binary_outputs:
            return await self._send_binary(
                send, response, results, request.all_binary, request.binary_outputs
            )
        await _send(send, 200, orjson.dumps(response, option=_NUMPY))
        return 200

    async def _send_binary(
        self,
        send: Send,
        response: dict[str, Any],
        results: dict[str, np.ndarray],
        every: bool,
        names: set[str],
    ) -> int:
        blobs = []
        for out in response["outputs"]:
            if every or out["name"] in names:
                blob = encode_binary(results[out["name"]])
                del out["data"]
                out["parameters"] = {"binary_data_size": len(blob)}
                blobs.append(blob)
        header = orjson.dumps(response, option=_NUMPY)
        headers = [
            (b"content-type", b"application/octet-stream"),
            (b"inference-header-content-length", str(len(header)).encode()),
        ]
        await _send(send, 200, header + b"".join(blobs), headers)
        return 200

    def _observe(self, response_id: str, results: dict[str, np.ndarray]) -> None:
        primary = self._primary
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

    async def _v1_predict_handler(self, scope: Scope, receive: Receive, send: Send) -> int:
        body = await self._read_body(scope, receive)
        runtime = self._require_ready()
        try:
            document = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise HttpError(400, f"malformed JSON: {exc}") from None
        if not isinstance(document, dict):
            raise HttpError(400, "request body must be a JSON object with 'instances'")
        key = "instances" if "instances" in document else "inputs" if "inputs" in document else None
        if key is None or not isinstance(document[key], list) or not document[key]:
            raise HttpError(400, "'instances' must be a non-empty array of rows")
        info = runtime.info
        if len(info.inputs) != 1:
            raise HttpError(
                400, f"V1 predict needs a single-input model; {self.model_name!r} has {len(info.inputs)}"
            )
        spec = info.inputs[0]
        rows = document[key]
        if (
            len(rows) * (spec.shape[-1] if spec.shape and spec.shape[-1] > 0 else 1)
            > self.settings.max_tensor_elements
        ):
            raise HttpError(413, f"{key} has more than {self.settings.max_tensor_elements} values")
        datatype = "FP64" if spec.datatype in ("FP16", "FP32") else spec.datatype  # cast after parsing
        array = to_array(rows, datatype, key, self.settings.allow_nan, keep_shape=True)
        if array.ndim == 1 and len(rows) and isinstance(rows[0], list):
            array = array.reshape(len(rows), -1)
        elif array.ndim == 1 and len(spec.shape) == 2:
            array = array.reshape(-1, 1) if spec.shape[1] == 1 else array.reshape(1, -1)
        tensor = RequestTensor(spec.name, array, key)
        inputs = bind_inputs([tensor], info.inputs, self.model_name)
        assert self.batcher is not None
        primary = self._primary or info.outputs[0].name
        results = await self.batcher.predict(inputs, [primary])
        response_id = document.get("id") if isinstance(document.get("id"), str) else self.ids.new()
        self._observe(response_id, results)
        value = results[primary]
        predictions = value.tolist()
        if value.dtype.kind == "f" and not np.isfinite(value).all():
            predictions = [None if isinstance(v, float) and not math.isfinite(v) else v for v in predictions]
        await _send(send, 200, orjson.dumps({"predictions": predictions, "id": response_id}))
        return 200

    # ---------------------------------------------------------------- feedback

    async def _feedback(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = await self._read_body(scope, receive)
        try:
            document = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise HttpError(400, f"malformed JSON: {exc}") from None
        if not isinstance(document, dict):
            raise HttpError(400, 'feedback must be a JSON object: {"id": ..., "reward": r} and/or "label"')
        response_id = document.get("id")
        if not isinstance(response_id, str) or not response_id or len(response_id) > 256:
            raise HttpError(400, "'id' must be the non-empty string id of a response of this server")
        has_reward = "reward" in document
        has_label = "label" in document
        if not has_reward and not has_label:
            raise HttpError(400, "feedback needs 'reward' (a number) and/or 'label'")
        reward = document.get("reward")
        if has_reward and (
            isinstance(reward, bool) or not isinstance(reward, int | float) or not math.isfinite(reward)
        ):
            raise HttpError(400, "'reward' must be a finite number")
        if has_reward and not math.isfinite(float(reward) * float(reward)):
            raise HttpError(400, f"'reward' {reward!r} is too large: its square must be a finite number")
        known, prediction = self.ids.lookup(response_id)
        if not known:
            raise HttpError(
                404,
                f"'id' {response_id!r} was not produced by this server (or left its cache of the "
                f"{self.ids.cache_size} most recent responses)",
            )
        correct: bool | None = None
        if has_label and prediction is not None:
            label = document["label"]
            predicted = prediction if isinstance(prediction, list) else [prediction]
            given = label if isinstance(label, list) else [label]
            if len(given) == len(predicted):
                hits = sum(str(a) == str(b) for a, b in zip(given, predicted, strict=True))
                correct = hits == len(given)
                if not has_reward:
                    reward = hits / len(given)
        m = self.metrics
        m.feedback_child.inc()
        if reward is not None:
            m.reward_child.inc(float(reward))
            m.reward_squares_child.inc(float(reward) * float(reward))
        if correct is not None:
            m.feedback_correct.labels(m.model, m.revision, "true" if correct else "false").inc()
        answer = {"id": response_id, "accepted": True, "reward": reward, "correct": correct}
        await _send(send, 200, orjson.dumps(answer))


def _release_free_memory() -> None:
    """Give the heap freed after loading (file buffers, conversion scratch) back to the OS."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _allow(method: str, allowed: str, path: str) -> None:
    if method != allowed and not (allowed == "GET" and method == "HEAD"):
        raise HttpError(405, f"{method} is not allowed on {path}; use {allowed}")


async def _send(
    send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [*(headers or _JSON), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})
