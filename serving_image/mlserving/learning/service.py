"""The learner's HTTP API (an ASGI app).

- ``POST /v1/log``: a batch of logged requests from a serving replica (see ``records``); answers
  ``{"accepted": n, "ignored": k, "rejected": [errors]}``, 200 even when some records are refused.
- ``POST /v2/models/{m}/feedback``: ``{"id": <response id>, "label": ...}``; 200 once the
  labelled row is written to the data log; 400 (bad label, naming the field), 404 (unknown id),
  409 (feedback already given), 410 (expired), 503 (not ready or storage down). Every error is
  ``{"error": "..."}``.
- ``POST /v1/feedback``: ``{"feedback": [{"id": ..., "label": ...}, ...]}`` from a forwarder that
  batches; answers 200 with ``{"results": [...]}``, one ``{"id", "status", "outcome", ...}`` per
  item in order (``error`` when refused), once every joined row is written.
- ``POST /v1/pin``: ``{"snapshot": N}`` pins what replicas serve to published snapshot N,
  ``{"snapshot": null}`` lets serving follow the newest snapshot again; answers
  ``{"pinned", "serving", "latest"}``; 400 (malformed), 404 (unknown snapshot), 409 (the snapshot
  fails verification), 503 (not ready or storage down). The pin is stored with the snapshots.
- ``POST /v1/candidate``: ``{"snapshot": N}`` points the candidate-snapshot replicas of a snapshot
  canary at N, ``{"snapshot": null}`` back at what the others serve; answers as ``/v1/pin`` does.
- ``GET /v2/health/live``, ``GET /v2/health/ready`` (ready once resumed), ``GET /v1/status``
  (JSON: samples, prequential metrics, the latest, serving and pinned snapshots, and the newest
  snapshots with their lineage, metrics and data versions), ``GET /metrics`` (Prometheus).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from mlserving.learning.metrics import learner_registry
from mlserving.learning.pipeline import LearningPipeline, PinRefused
from mlserving.learning.records import MAX_ID_LENGTH, RecordError, parse_log_batch

MAX_FEEDBACK_BATCH = 10_000

log = logging.getLogger("mlserving.learning")


class _BodyError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def json_response(status: int, body: Any) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


def error(status: int, message: str, **extra: Any) -> Response:
    return json_response(status, {"error": message, **extra})


async def _read_json(request: Request, max_bytes: int) -> Any:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > max_bytes:
        raise _BodyError(413, f"body: {declared} bytes is more than the limit of {max_bytes}")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise _BodyError(413, f"body: more than the limit of {max_bytes} bytes")
        chunks.append(chunk)
    try:
        return orjson.loads(b"".join(chunks))
    except orjson.JSONDecodeError as exc:
        raise _BodyError(400, f"body: malformed JSON: {exc}") from None


def _feedback_problem(document: Any, label_field: str) -> str:
    """What is wrong with one feedback object, naming the field; empty when nothing is."""
    if not isinstance(document, dict):
        return 'body: feedback must be a JSON object {"id": ..., "label": ...}'
    response_id = document.get("id")
    if not isinstance(response_id, str) or not response_id or len(response_id) > MAX_ID_LENGTH:
        return f"id: must be the non-empty string id of a response (at most {MAX_ID_LENGTH} characters)"
    if label_field not in document:
        return f"{label_field}: missing; feedback to the learner must carry a label"
    return ""


def _is_pin(document: Any) -> bool:
    if not isinstance(document, dict) or "snapshot" not in document:
        return False
    version = document["snapshot"]
    return version is None or (isinstance(version, int) and not isinstance(version, bool) and version >= 0)


class LearnerApi:
    """The request handlers: each translates HTTP to one call of the pipeline and back."""

    def __init__(self, pipeline: LearningPipeline, max_body_bytes: int) -> None:
        self.pipeline = pipeline
        self.max_body_bytes = max_body_bytes
        self.registry = learner_registry(pipeline)

    async def log_batch(self, request: Request) -> Response:
        pipeline = self.pipeline
        if not pipeline.ready:
            return error(503, "learner: not ready; send the batch again later")
        document = await _read_json(request, self.max_body_bytes)
        try:
            accepted, rejected = parse_log_batch(
                document, n_features=pipeline.learner.n_features, now=pipeline.clock()
            )
        except RecordError as exc:
            return error(400, str(exc))
        pipeline.rejected_records += len(rejected)
        new = pipeline.ingest(accepted)
        return json_response(
            200, {"accepted": new, "ignored": len(accepted) - new, "rejected": rejected[:100]}
        )

    async def feedback(self, request: Request) -> Response:
        model_name = self.pipeline.config.model_name
        if request.path_params["model"] != model_name:
            return error(
                404, f"model: {request.path_params['model']!r} is not learned here (this is {model_name!r})"
            )
        document = await _read_json(request, self.max_body_bytes)
        field = self.pipeline.config.label_field
        problem = _feedback_problem(document, field)
        if problem:
            return error(400, problem)
        answer = await self.pipeline.feedback(document["id"], document[field])
        return json_response(answer.status, answer.body(document["id"]))

    async def feedback_batch(self, request: Request) -> Response:
        document = await _read_json(request, self.max_body_bytes)
        items = document.get("feedback") if isinstance(document, dict) else None
        if not isinstance(items, list) or len(items) > MAX_FEEDBACK_BATCH:
            return error(
                400,
                f'feedback: the body must be {{"feedback": [...]}} with at most {MAX_FEEDBACK_BATCH} items',
            )
        field = self.pipeline.config.label_field
        problems = [_feedback_problem(item, field) for item in items]
        valid = [
            (item["id"], item[field]) for item, problem in zip(items, problems, strict=True) if not problem
        ]
        answers = iter(await self.pipeline.feedback_batch(valid))
        results = []
        for index, (item, problem) in enumerate(zip(items, problems, strict=True)):
            if problem:
                where = f"feedback[{index}]"
                message = f"{where}: {problem[6:]}" if problem.startswith("body: ") else f"{where}.{problem}"
                results.append({"status": 400, "outcome": "invalid", "error": message})
                continue
            answer = next(answers)
            results.append({"id": item["id"], "status": answer.status, **answer.body(item["id"])})
        return json_response(200, {"results": results})

    async def pin(self, request: Request) -> Response:
        document = await _read_json(request, self.max_body_bytes)
        if not _is_pin(document):
            return error(400, 'snapshot: the body must be {"snapshot": N} (N >= 0) or {"snapshot": null}')
        version = document["snapshot"]
        try:
            serving = await self.pipeline.pin(version)
        except PinRefused as exc:
            return error(exc.status, exc.message)
        return json_response(
            200, {"pinned": version, "serving": serving, "latest": self.pipeline.snapshot_version}
        )

    async def candidate(self, request: Request) -> Response:
        document = await _read_json(request, self.max_body_bytes)
        if not _is_pin(document):
            return error(400, 'snapshot: the body must be {"snapshot": N} (N >= 0) or {"snapshot": null}')
        version = document["snapshot"]
        try:
            await self.pipeline.set_candidate(version)
        except PinRefused as exc:
            return error(exc.status, exc.message)
        return json_response(200, {"candidate": version, "serving": self.pipeline.serving_version})

    async def live(self, _: Request) -> Response:
        return json_response(200, {"live": True})

    async def ready(self, _: Request) -> Response:
        if self.pipeline.ready:
            return json_response(200, {"ready": True, "snapshot_version": self.pipeline.snapshot_version})
        return error(503, f"learner: not ready: {self.pipeline.resume_error or 'resuming'}", ready=False)

    async def status(self, _: Request) -> Response:
        return json_response(200, self.pipeline.status())

    async def metrics(self, _: Request) -> Response:
        return Response(generate_latest(self.registry), media_type=CONTENT_TYPE_LATEST)


async def _body_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, _BodyError)
    return error(exc.status, exc.message)


async def _http_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return error(exc.status_code, str(exc.detail))


async def _server_error(_: Request, exc: Exception) -> Response:
    log.exception("unhandled error", exc_info=exc)
    return error(500, f"internal error: {type(exc).__name__}")


def create_app(pipeline: LearningPipeline, *, max_body_bytes: int = 16 * 1024 * 1024) -> Starlette:
    """The learner's ASGI app; its lifespan starts and stops the pipeline's background work."""
    api = LearnerApi(pipeline, max_body_bytes)

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        await pipeline.start()
        try:
            yield
        finally:
            await pipeline.stop()

    return Starlette(
        routes=[
            Route("/v1/log", api.log_batch, methods=["POST"]),
            Route("/v2/models/{model}/feedback", api.feedback, methods=["POST"]),
            Route("/v1/feedback", api.feedback_batch, methods=["POST"]),
            Route("/v1/pin", api.pin, methods=["POST"]),
            Route("/v1/candidate", api.candidate, methods=["POST"]),
            Route("/v2/health/live", api.live, methods=["GET"]),
            Route("/v2/health/ready", api.ready, methods=["GET"]),
            Route("/v1/status", api.status, methods=["GET"]),
            Route("/metrics", api.metrics, methods=["GET"]),
        ],
        lifespan=lifespan,
        exception_handlers={_BodyError: _body_error, HTTPException: _http_error, Exception: _server_error},
    )
