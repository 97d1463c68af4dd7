"""The replica's side of the online learner: every served request logged to it, labelled feedback
forwarded to it.

Logging adds one record to a bounded in-memory queue and returns: no I/O, no serialization, no
lock on the inference path. ``mlserving.learning.shipper.LogShipper`` sends the queue to the
learner's ``POST /v1/log`` in batches from a background task, retries while the learner is away,
and drops the oldest records (counted) once the queue is full, so a slow or absent learner costs
logged requests, never inference latency. The batch format is the learner's
(``mlserving.learning.records``)::

    {"records": [{"id": "<response id>", "features": [[...], ...], "prediction": [...],
                  "snapshot": 3, "time": 1718000000.123}, ...]}

Feedback is forwarded as ``{"id": ..., "label": ...}`` to the learner's
``POST /v2/models/{model}/feedback``; its answer (200 once the labelled row is written, or a 4xx
naming what is wrong) is what the client gets, so an acknowledged label is never lost.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
from prometheus_client import CollectorRegistry

from mlserving.learning.shipper import LogShipper
from mlserving.server.metrics import LearningMetrics, RequestLogCollector

log = logging.getLogger("mlserving.server")


@dataclass(frozen=True, slots=True)
class LearnerAnswer:
    """The learner's answer to forwarded feedback; ``status`` 0 when it could not be reached."""

    status: int
    body: Mapping[str, Any]

    @property
    def accepted(self) -> bool:
        return 200 <= self.status < 300


class LearnerLink:
    """Request log and feedback forwarding to one learner, for one served model."""

    def __init__(
        self,
        url: str,
        model_name: str,
        *,
        max_queue: int,
        max_batch: int,
        flush_interval: float,
        timeout: float,
        metrics: LearningMetrics,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.feedback_url = f"{self.url}/v2/models/{model_name}/feedback"
        self.timeout = timeout
        self.metrics = metrics
        self.records = 0
        self._client: Any = None
        # The shipper is made in start(), with the client it shares (both live on the event loop).
        self._shipping: dict[str, Any] = {
            "max_queue": max_queue,
            "max_batch": max_batch,
            "flush_interval": flush_interval,
        }
        self.shipper: LogShipper | None = None
        self._warned_inputs = False
        if registry is not None:
            registry.register(RequestLogCollector(metrics.model, self.counts))

    async def start(self) -> None:
        import httpx

        self._client = httpx.AsyncClient(timeout=self.timeout)
        self.shipper = LogShipper(self.url, timeout=self.timeout, client=self._client, **self._shipping)
        await self.shipper.start()

    async def close(self, drain_timeout: float) -> None:
        """Send what is queued (for up to ``drain_timeout`` seconds), then stop."""
        if self.shipper is not None:
            await self.shipper.close(drain_timeout=drain_timeout)
        if self._client is not None:
            await self._client.aclose()

    # ---------------------------------------------------------------- request log

    def log(
        self,
        response_id: str,
        inputs: Mapping[str, np.ndarray],
        prediction: np.ndarray | None,
        snapshot: int | None,
    ) -> None:
        """Queue one served request; never blocks (a full queue drops its oldest record)."""
        shipper = self.shipper
        if shipper is None:
            return
        if len(inputs) != 1:
            # The learner learns from one feature matrix; a model of several inputs is not logged.
            if not self._warned_inputs:
                self._warned_inputs = True
                log.warning("the model has %d inputs; requests are not logged to the learner", len(inputs))
            return
        features = next(iter(inputs.values()))
        rows = int(features.shape[0]) if features.ndim else 1
        # A copy: the request's buffers are released at once, whatever waits in the queue.
        features = np.array(features, copy=True).reshape(rows, -1)
        if prediction is not None:
            prediction = prediction.reshape(rows) if prediction.size == rows else prediction
        self.records += 1
        shipper.log(response_id, features, prediction, snapshot, time.time())

    def counts(self) -> dict[str, int]:
        shipper = self.shipper
        if shipper is None:
            return {"records": self.records}
        return {
            "records": self.records,
            "sent": shipper.sent,
            "refused": shipper.refused,
            "dropped": shipper.dropped,
            "send_failures": shipper.failures,
            "queued": shipper.queued,
        }

    # ---------------------------------------------------------------- feedback

    async def forward_feedback(self, response_id: str, label: Any) -> LearnerAnswer:
        """Post ``{"id", "label"}`` to the learner and return its answer."""
        try:
            response = await self._client.post(self.feedback_url, json={"id": response_id, "label": label})
        except Exception as exc:
            self.metrics.feedback_forwarded.labels(self.metrics.model, "0").inc()
            log.warning("cannot forward feedback to the learner at %s: %s", self.url, exc)
            return LearnerAnswer(0, {"error": f"the learner at {self.url} is unreachable: {exc}"})
        self.metrics.feedback_forwarded.labels(self.metrics.model, str(response.status_code)).inc()
        try:
            body = orjson.loads(response.content)
        except orjson.JSONDecodeError:
            body = None
        if not isinstance(body, dict):
            body = {"error": f"the learner answered {response.status_code}: {response.text[:200]}"}
        return LearnerAnswer(response.status_code, body)
