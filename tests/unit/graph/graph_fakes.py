"""Components as plain async functions behind the graph's ``Call`` interface, and graph builders."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from prometheus_client import CollectorRegistry

from mlserving.router.graph import Graph
from mlserving.router.graph.events import EventPublisher
from mlserving.router.graph.executor import CompiledGraph, compile_graph, run_graph
from mlserving.router.graph.metrics import GraphMetrics

Tensor = dict[str, Any]
Predict = Callable[[list[Tensor]], list[Tensor]]


def tensor(name: str, data: list[Any], shape: list[int] | None = None, datatype: str = "FP64") -> Tensor:
    return {"name": name, "datatype": datatype, "shape": shape or [len(data)], "data": data}


def rows_of(inputs: list[Tensor]) -> list[list[Any]]:
    first = inputs[0]
    width = first["shape"][1] if len(first["shape"]) > 1 else 1
    data = first["data"]
    return [data[i : i + width] for i in range(0, len(data), width)]


def weighted_row_sum(weight: float, name: str = "value") -> Predict:
    """value[row] = weight * sum(row): easy to check by hand."""
    return lambda inputs: [tensor(name, [weight * sum(row) for row in rows_of(inputs)])]


def fixed(*outputs: Tensor) -> Predict:
    return lambda inputs: list(outputs)


@dataclass
class Behaviour:
    predict: Predict
    variant: str | None = None
    delay: float = 0.0
    status: int = 200
    body: bytes | None = None
    raises: BaseException | None = None


@dataclass
class Components:
    """Fake components keyed by upstream URL; records every call it answers."""

    behaviours: dict[str, Behaviour] = field(default_factory=dict)
    calls: list[dict[str, Any]] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0
    cancelled: list[str] = field(default_factory=list)

    def add(self, name: str, predict: Predict, **behaviour: Any) -> str:
        upstream = f"http://{name}:8080"
        self.behaviours[upstream] = Behaviour(predict, **behaviour)
        return upstream

    def requests_to(self, name: str) -> list[dict[str, Any]]:
        return [c["request"] for c in self.calls if c["upstream"] == f"http://{name}:8080"]

    async def __call__(
        self, upstream: str, path: str, body: bytes, headers: Any, timeout: float
    ) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        behaviour = self.behaviours[upstream]
        request = orjson.loads(body)
        self.calls.append(
            {
                "upstream": upstream,
                "path": path,
                "request": request,
                "headers": list(headers),
                "timeout": timeout,
            }
        )
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if behaviour.delay:
                await asyncio.sleep(behaviour.delay)
        except asyncio.CancelledError:
            self.cancelled.append(upstream)
            raise
        finally:
            self.in_flight -= 1
        if behaviour.raises is not None:
            raise behaviour.raises
        headers_out = []
        if behaviour.variant is not None:
            headers_out.append((b"x-mlrollouts-variant", behaviour.variant.encode()))
        if behaviour.body is not None:
            return behaviour.status, headers_out, behaviour.body
        name = upstream.removeprefix("http://").removesuffix(":8080")
        answer = {
            "model_name": name,
            "id": f"{name}-{len(self.calls)}",
            "outputs": behaviour.predict(request["inputs"]),
        }
        return behaviour.status, headers_out, orjson.dumps(answer)


def compiled(
    document: dict[str, Any], name: str = "g", registry: CollectorRegistry | None = None
) -> CompiledGraph:
    spec = Graph.model_validate(document)
    metrics = GraphMetrics(registry) if registry is not None else None
    events = EventPublisher(name, spec.events, metrics) if spec.events is not None else None
    return compile_graph(spec, name, metrics=metrics, events=events)


def model_node(name: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "type": "Model", "upstream": f"http://{name}:8080", "model": name, **extra}


def request(*inputs: Tensor, **extra: Any) -> bytes:
    return orjson.dumps({"inputs": list(inputs), **extra})


async def infer(
    graph: CompiledGraph, components: Components, *inputs: Tensor, **kwargs: Any
) -> tuple[int, dict[str, Any], dict[bytes, bytes]]:
    """Run the graph; the decoded body and the headers as a dict."""
    status, body, headers = await run_graph(graph, request(*inputs), components, **kwargs)
    return status, orjson.loads(body), dict(headers)


def output(body: dict[str, Any], name: str | None = None) -> Tensor:
    outputs = body["outputs"]
    return outputs[0] if name is None else next(t for t in outputs if t["name"] == name)


def sample_value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    value = registry.get_sample_value(name, labels)
    return 0.0 if value is None else value
