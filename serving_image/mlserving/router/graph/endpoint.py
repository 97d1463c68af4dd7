"""The HTTP face of a graph route: what the router answers on a composite model's paths.

V2: ``GET /v2/models/<m>`` (metadata derived from the components'), ``GET .../ready``, ``POST
.../infer``, ``POST .../feedback`` (forwarded to the component a ``node`` names). V1: ``GET
/v1/models/<m>`` and ``POST /v1/models/<m>:predict``. Every error is JSON; errors about one node name
it in ``"node"``.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from mlserving.feedback import parse_feedback
from mlserving.http import Headers, HttpError, read_body, require_method, send_body, send_json
from mlserving.http.asgi import Receive, Scope, Send
from mlserving.router.graph.executor import ID_HEADER, CompiledGraph, ComponentUnavailable
from mlserving.router.graph.metadata import GraphDescriptions, NodeProblem
from mlserving.router.graph.model import ModelNode
from mlserving.router.graph.runtime import GraphRuntime
from mlserving.router.graph.v1 import predictions, v2_request
from mlserving.router.ids import IdSigner

GRAPH_VARIANT = "graph"
"""The variant a graph's response ids carry (a graph has no variants of its own)."""

FEEDBACK_TIMEOUT_SECONDS = 10.0
_JSON = (b"content-type", b"application/json")


class GraphEndpoint:
    """Answers the requests for the graphs of a ``GraphRuntime``."""

    def __init__(
        self,
        runtime: GraphRuntime,
        descriptions: GraphDescriptions,
        signer: IdSigner,
        max_body_bytes: int,
    ) -> None:
        self.runtime = runtime
        self.descriptions = descriptions
        self.signer = signer
        self.max_body_bytes = max_body_bytes

    async def v2(
        self, scope: Scope, receive: Receive, send: Send, graph: CompiledGraph, tail: str, headers: Headers
    ) -> None:
        """``tail``: the path after ``/v2/models/<m>`` without its leading slash ("" for metadata)."""
        answer = _V2_PATHS.get(tail)
        if answer is None:
            if tail.startswith("versions/"):
                raise HttpError(
                    404, f"composite model {graph.model!r} has no versions: use /v2/models/{graph.model}"
                )
            raise HttpError(404, f"no such path: {scope['path']}")
        method, handler = answer
        require_method(scope["method"], method, scope["path"])
        await handler(self, scope, receive, send, graph, headers)

    async def v1(
        self, scope: Scope, receive: Receive, send: Send, graph: CompiledGraph, verb: str, headers: Headers
    ) -> None:
        """``verb``: what follows ``:`` in ``/v1/models/<m>:<verb>`` ("" for the model's status)."""
        answer = _V1_VERBS.get(verb)
        if answer is None:
            raise HttpError(404, f"unknown verb {verb!r} (V1 supports :predict)")
        method, handler = answer
        require_method(scope["method"], method, scope["path"])
        await handler(self, scope, receive, send, graph, headers)

    # -- inference ---------------------------------------------------------------------------------

    async def _read(self, scope: Scope, receive: Receive, graph: CompiledGraph) -> bytes:
        """The request body; a refused body is counted as the graph's answer too."""
        started = time.perf_counter()
        try:
            return await read_body(scope, receive, self.max_body_bytes)
        except HttpError as exc:
            if graph.metrics is not None:
                graph.metrics.observe_request(graph.name, exc.status, time.perf_counter() - started)
            raise

    async def _infer(
        self, scope: Scope, receive: Receive, send: Send, graph: CompiledGraph, headers: Headers
    ) -> None:
        body = await self._read(scope, receive, graph)
        response_id = self.signer.issue(graph.name, GRAPH_VARIANT, time.time())
        status, payload, response_headers = await self.runtime.infer(graph, body, headers, response_id)
        response_headers.append((ID_HEADER, response_id.encode()))
        await send_body(send, status, payload, response_headers)

    async def _predict(
        self, scope: Scope, receive: Receive, send: Send, graph: CompiledGraph, headers: Headers
    ) -> None:
        body = await self._read(scope, receive, graph)
        try:
            document = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise HttpError(400, f"request body is not valid JSON: {exc}") from None
        metadata = await self._described(send, graph)
        if metadata is None:
            return
        request = v2_request(document, metadata["inputs"], graph.model)
        response_id = self.signer.issue(graph.name, GRAPH_VARIANT, time.time())
        status, payload, response_headers = await self.runtime.infer(graph, request, headers, response_id)
        response_headers.append((ID_HEADER, response_id.encode()))
        if status == 200:
            answer = orjson.loads(payload)
            payload = orjson.dumps({"predictions": predictions(answer["outputs"]), "id": response_id})
        await send_body(send, status, payload, response_headers)

    # -- metadata ----------------------------------------------------------------------------------

    async def _metadata(
        self, _scope: Scope, _receive: Receive, send: Send, graph: CompiledGraph, _headers: Headers
    ) -> None:
        metadata = await self._described(send, graph)
        if metadata is not None:
            await send_json(send, 200, metadata)

    async def _ready(
        self, _scope: Scope, _receive: Receive, send: Send, graph: CompiledGraph, _headers: Headers
    ) -> None:
        ready, answer = await self.descriptions.readiness(graph)
        await send_json(send, 200 if ready else 503, answer)

    async def _status(
        self, _scope: Scope, _receive: Receive, send: Send, graph: CompiledGraph, _headers: Headers
    ) -> None:
        ready, _ = await self.descriptions.readiness(graph)
        await send_json(send, 200, {"name": graph.model, "ready": ready})

    async def _described(self, send: Send, graph: CompiledGraph) -> dict[str, Any] | None:
        """The graph's metadata, or None once the problem that prevents it was answered."""
        try:
            return await self.descriptions.metadata(graph)
        except NodeProblem as problem:
            message = f"the metadata of composite model {graph.model!r} is unavailable: {problem}"
            await send_json(send, problem.status, {"error": message, "node": problem.node})
            return None

    # -- feedback ----------------------------------------------------------------------------------

    async def _feedback(
        self, scope: Scope, receive: Receive, send: Send, graph: CompiledGraph, _headers: Headers
    ) -> None:
        """Feedback for one component, forwarded to it with the id its response carried.

        Body: ``{"node": <Model node>, "id": <parameters.graph.components[node].id>, "reward": r}``.
        """
        body = await read_body(scope, receive, self.max_body_bytes)
        feedback = parse_feedback(body)
        document = orjson.loads(body)
        node = self._model_node(graph, document.get("node"))
        document.pop("node")
        path = f"/v2/models/{node.model}/feedback"
        try:
            status, _, _ = await self.runtime.call(
                node.upstream, path, orjson.dumps(document), (_JSON,), FEEDBACK_TIMEOUT_SECONDS
            )
        except Exception as exc:  # the component's failure is the answer, never the router's
            status = (
                503
                if isinstance(exc, ComponentUnavailable)
                else 504
                if isinstance(exc, TimeoutError)
                else 502
            )
            message = f"node {node.name!r}: feedback not forwarded to component {node.model!r}: {exc}"
            await send_json(send, status, {"error": message, "node": node.name})
            return
        answer = {
            "id": feedback.id,
            "route": graph.name,
            "node": node.name,
            "model": node.model,
            "forwarded": 200 <= status < 300,
            "upstreamStatus": status,
        }
        await send_json(send, 200, answer)

    @staticmethod
    def _model_node(graph: CompiledGraph, name: Any) -> ModelNode:
        models = [n.name for n in graph.spec.nodes if isinstance(n, ModelNode)]
        if not isinstance(name, str) or name not in models:
            raise HttpError(
                400,
                f"'node' must name the Model node the feedback is for (one of: {', '.join(models)}), "
                f"with the 'id' of that component from parameters.graph.components",
            )
        node = graph.spec.node(name)
        assert isinstance(node, ModelNode)
        return node


_Handler = Callable[[GraphEndpoint, Scope, Receive, Send, CompiledGraph, Headers], Awaitable[None]]

_V2_PATHS: dict[str, tuple[str, _Handler]] = {
    "infer": ("POST", GraphEndpoint._infer),
    "": ("GET", GraphEndpoint._metadata),
    "ready": ("GET", GraphEndpoint._ready),
    "feedback": ("POST", GraphEndpoint._feedback),
}
"""What follows ``/v2/models/<m>/`` on a graph route: the method it takes and who answers it."""

_V1_VERBS: dict[str, tuple[str, _Handler]] = {
    "predict": ("POST", GraphEndpoint._predict),
    "": ("GET", GraphEndpoint._status),
}
"""What follows ``/v1/models/<m>:`` on a graph route: the method it takes and who answers it."""
