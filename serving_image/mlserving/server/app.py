"""The model server's REST front end: a plain ASGI application (no framework on the hot path).

Endpoints: Open Inference Protocol REST (``/v2/health/live|ready``, ``/v2``, ``/v2/models/{m}``,
``/v2/models/{m}/versions/{v}``, ``.../ready``, ``.../infer``), feedback
(``POST /v2/models/{m}/feedback``), KServe V1 (``/v1/models``, ``/v1/models/{m}``,
``/v1/models/{m}:predict``) and ``/metrics``. Every error answer is ``{"error": "..."}``.

When the model is a snapshot of the online learner, every inference response names it (header
``x-mlrollouts-snapshot``, and ``parameters.snapshot`` in V2), so feedback is attributed to it.
With a learner configured, labelled feedback is forwarded to it and its refusal is the answer.

Requests are parsed here and answered by the ``DataPlane``, which holds the model.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from collections.abc import Set as AbstractSet
from typing import Any

import numpy as np
import orjson

from mlserving.feedback import parse_feedback
from mlserving.http import (
    Application,
    ClientDisconnected,
    Headers,
    HttpError,
    Receive,
    Scope,
    Send,
    int_header,
    read_body,
    require_method,
    send_body,
    send_error,
    send_json,
)
from mlserving.server.dataplane import SERVER_METADATA, DataPlane
from mlserving.server.protocol import (
    InferenceRequest,
    decode_request,
    decode_v1_request,
    encode_binary,
    encode_output,
    encode_predictions,
)

log = logging.getLogger("mlserving.server")

_NUMPY = orjson.OPT_SERIALIZE_NUMPY
_LIVE = b'{"live":true}'
_READY = b'{"ready":true}'

Handler = Callable[[Scope, Receive, Send], Awaitable[int]]


class InferenceServer(Application):
    """ASGI application serving the models of a ``DataPlane`` over REST."""

    def __init__(self, dataplane: DataPlane) -> None:
        self.dataplane = dataplane
        self.settings = dataplane.settings
        self.metrics = dataplane.metrics
        self.model_name = dataplane.model_name
        self.version = dataplane.version
        base = f"/v2/models/{self.model_name}"
        self._infer_paths = {f"{base}/infer", f"{base}/versions/{self.version}/infer"}
        self._server_metadata = orjson.dumps(SERVER_METADATA)

    async def startup(self) -> None:
        await self.dataplane.start()

    async def shutdown(self) -> None:
        await self.dataplane.stop()

    # ---------------------------------------------------------------- routing

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.dataplane.started += 1
        path: str = scope["path"]
        method: str = scope["method"]
        if method == "POST" and (path in self._infer_paths):
            await self._timed(self._infer, scope, receive, send)
            return
        try:
            await self._route(path, method, scope, receive, send)
        except HttpError as exc:
            await send_error(send, exc)
        except ClientDisconnected:
            return

    async def _route(self, path: str, method: str, scope: Scope, receive: Receive, send: Send) -> None:
        parts = path.strip("/").split("/")
        if not parts[0]:
            raise HttpError(404, f"no route for {path}; the API lives under /v2 and /v1")
        if parts[0] == "v2":
            if len(parts) == 1:
                require_method(method, "GET", path)
                await send_body(send, 200, self._server_metadata)
                return
            if parts[1] == "health" and len(parts) == 3 and parts[2] in ("live", "ready"):
                require_method(method, "GET", path)
                await self._health(send, parts[2])
                return
            if parts[1] == "models" and len(parts) >= 3:
                await self._model_route(parts[2:], method, path, scope, receive, send)
                return
        elif parts[0] == "v1" and len(parts) >= 2 and parts[1] == "models":
            await self._v1_route(parts[2:], method, path, scope, receive, send)
            return
        elif parts == ["metrics"]:
            require_method(method, "GET", path)
            await self._send_metrics(send)
            return
        raise HttpError(404, f"no route for {path}")

    async def _health(self, send: Send, probe: str) -> None:
        if probe == "live":
            await send_body(send, 200, _LIVE)
        elif self.dataplane.ready:
            await send_body(send, 200, _READY)
        else:
            await send_json(send, 503, {"ready": False, "error": self.dataplane.not_ready_reason()})

    async def _model_route(
        self, rest: list[str], method: str, path: str, scope: Scope, receive: Receive, send: Send
    ) -> None:
        name, tail, version = rest[0], rest[1:], None
        if len(tail) >= 2 and tail[0] == "versions":
            version, tail = tail[1], tail[2:]
        self.dataplane.lookup(name, version)
        if not tail:
            require_method(method, "GET", path)
            await send_json(send, 200, self.dataplane.metadata(name, version))
        elif tail == ["ready"]:
            require_method(method, "GET", path)
            await self._model_ready(send, name)
        elif tail == ["infer"]:
            require_method(method, "POST", path)
            await self._timed(self._infer, scope, receive, send)
        elif tail == ["feedback"] and version is None:
            require_method(method, "POST", path)
            await self._feedback(scope, receive, send, name)
        else:
            raise HttpError(404, f"no route for {path}")

    async def _model_ready(self, send: Send, name: str) -> None:
        if self.dataplane.ready:
            await send_json(send, 200, {"name": name, "ready": True})
        else:
            body = {"name": name, "ready": False, "error": self.dataplane.not_ready_reason()}
            await send_json(send, 503, body)

    async def _v1_route(
        self, rest: list[str], method: str, path: str, scope: Scope, receive: Receive, send: Send
    ) -> None:
        if not rest or rest == [""]:
            require_method(method, "GET", path)
            await send_json(send, 200, {"models": [self.model_name]})
            return
        if len(rest) != 1:
            raise HttpError(404, f"no route for {path}")
        name, sep, verb = rest[0].partition(":")
        self.dataplane.lookup(name)
        if not sep:
            require_method(method, "GET", path)
            await send_json(send, 200, {"name": name, "ready": self.dataplane.ready})
        elif verb == "predict":
            require_method(method, "POST", path)
            await self._timed(self._v1_predict, scope, receive, send)
        else:
            raise HttpError(404, f"unknown verb {verb!r} (V1 supports :predict)")

    async def _send_metrics(self, send: Send) -> None:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        body = generate_latest(self.metrics.registry)
        await send_body(send, 200, body, [(b"content-type", CONTENT_TYPE_LATEST.encode())])

    # ---------------------------------------------------------------- inference

    async def _timed(self, handler: Handler, scope: Scope, receive: Receive, send: Send) -> None:
        """Run an inference handler: count it in flight, time it, answer every failure as JSON."""
        dataplane = self.dataplane
        started = time.perf_counter()
        dataplane.inflight += 1
        try:
            code = await handler(scope, receive, send)
        except HttpError as exc:
            code = exc.status
            await send_error(send, exc)
        except ClientDisconnected:
            return  # nobody to answer, and nothing the model did: not counted
        except Exception as exc:
            code = 500
            log.exception("inference failed")
            await send_error(send, HttpError(500, f"internal error: {type(exc).__name__}: {exc}"))
        finally:
            dataplane.inflight -= 1
        self.metrics.observe_request(code, time.perf_counter() - started)

    async def _infer(self, scope: Scope, receive: Receive, send: Send) -> int:
        body = await read_body(scope, receive, self.settings.max_body_bytes)
        model = self.dataplane.model(self.model_name)
        request = self._decode_v2(scope, body)
        response_id, results = await self.dataplane.infer(model, request)
        outputs = [encode_output(name, value) for name, value in results.items()]
        response: dict[str, Any] = {
            "model_name": self.model_name,
            "model_version": self.version,
            "id": response_id,
            "outputs": outputs,
        }
        if request.parameters is not None:
            response["parameters"] = request.parameters
        if model.snapshot is not None:
            response["parameters"] = {**(request.parameters or {}), "snapshot": model.snapshot}
        if request.all_binary or request.binary_outputs:
            body, headers = _binary_response(response, results, request.all_binary, request.binary_outputs)
            await send_body(send, 200, body, (*headers, *model.snapshot_headers))
        else:
            await send_body(send, 200, orjson.dumps(response, option=_NUMPY), model.response_headers)
        return 200

    def _decode_v2(self, scope: Scope, body: bytes) -> InferenceRequest:
        header_length = int_header(
            scope, b"inference-header-content-length", "Inference-Header-Content-Length"
        )
        if header_length is not None and not 0 <= header_length <= len(body):
            raise HttpError(400, "Inference-Header-Content-Length is larger than the body")
        document = _load_json(body if header_length is None else body[:header_length])
        return decode_request(
            document,
            max_elements=self.settings.max_tensor_elements,
            allow_nan=self.settings.allow_nan,
            binary=None if header_length is None else body[header_length:],
        )

    async def _v1_predict(self, scope: Scope, receive: Receive, send: Send) -> int:
        body = await read_body(scope, receive, self.settings.max_body_bytes)
        model = self.dataplane.model(self.model_name)
        output = model.default_output
        request = decode_v1_request(
            _load_json(body),
            model.runtime.info.inputs,
            output,
            self.model_name,
            max_elements=self.settings.max_tensor_elements,
            allow_nan=self.settings.allow_nan,
        )
        response_id, results = await self.dataplane.infer(model, request)
        predictions = encode_predictions(results[output])
        answer = {"predictions": predictions, "id": response_id}
        await send_json(send, 200, answer, model.response_headers)
        return 200

    async def _feedback(self, scope: Scope, receive: Receive, send: Send, name: str) -> None:
        feedback = parse_feedback(await read_body(scope, receive, self.settings.max_body_bytes))
        self.dataplane.refuse_if_credited(feedback)
        learner = await self.dataplane.forward_feedback(name, feedback)
        if learner is not None and not learner.accepted:
            # Nothing counted here either: the client may send the same feedback again.
            await send_json(send, learner.status or 503, learner.body)
            return
        outcome = self.dataplane.feedback(name, feedback, learner_accepted=learner is not None)
        answer = {"id": feedback.id, "accepted": True, "reward": outcome.reward, "correct": outcome.correct}
        if learner is not None:
            answer["learner"] = learner.body
        await send_json(send, 200, answer)


def _load_json(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise HttpError(400, f"malformed JSON: {exc}") from None


def _binary_response(
    response: dict[str, Any], results: dict[str, np.ndarray], every: bool, names: AbstractSet[str]
) -> tuple[bytes, Headers]:
    """The binary tensor extension: the JSON header, then the raw bytes of the chosen outputs."""
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
    return header + b"".join(blobs), headers
