"""The graph's own model metadata and readiness, derived from its components'.

A composite model has no signature of its own: its inputs are those of the component a request
enters first (every child of an ensemble or switch gets the same inputs, so the first that answers
speaks for all), its outputs those its root answers: the last child's for a sequence, the stacking
model's for a stack, and the combined tensors for an ensemble, named and typed as the combiner
answers them. The operator writing the graph does not know the models' tensors, and a component's
next version may change them, so they are read from the components' Open Inference Protocol
metadata rather than declared in the graph.

``describe`` and ``readiness`` are pure over what was fetched; ``GraphDescriptions`` fetches
(through the router's pool), caches a successful description for ``ttl_seconds`` per compiled
graph (a new route table starts afresh) and never caches a failure.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections.abc import Callable
from dataclasses import KW_ONLY, dataclass, field
from typing import Any

import orjson

from mlserving.router.graph import model as graph_model
from mlserving.router.graph.calls import Fetch
from mlserving.router.graph.executor import CompiledGraph, ComponentUnavailable
from mlserving.router.graph.model import EnsembleNode, Graph, ModelNode, SequenceNode, SwitchNode
from mlserving.router.graph.tensors import TensorError, common_datatype

PLATFORM = "mlrollouts-graph"
_AVERAGES = frozenset(
    {graph_model.CombinerType.MEAN, graph_model.CombinerType.WEIGHTED_MEAN, graph_model.CombinerType.LINEAR}
)
_SMALL_FLOATS = frozenset({"FP16", "FP32"})
TensorMeta = dict[str, Any]


class NodeProblem(Exception):
    """Why a node cannot be described or is not ready; ``status`` is the HTTP status it maps to."""

    def __init__(self, node: str, status: int, message: str) -> None:
        super().__init__(f"node {node!r}: {message}")
        self.node = node
        self.status = status


Found = dict[str, dict[str, Any] | NodeProblem]
"""Per Model node: its component's metadata document, or why it could not be read."""


# -- pure derivation ---------------------------------------------------------------------------------


def reachable_model_nodes(spec: Graph) -> list[ModelNode]:
    """The Model nodes a request can reach from the root, in first-visit order."""
    seen: dict[str, None] = {}

    def visit(name: str) -> None:
        if name in seen:
            return
        seen[name] = None
        for _, ref in spec.node(name).references():
            visit(ref)

    visit(spec.root)
    return [node for name in seen if isinstance(node := spec.node(name), ModelNode)]


def hard_model_nodes(spec: Graph) -> set[str]:
    """Model nodes whose failure fails the graph: reachable from the root through Fail nodes only."""
    hard: set[str] = set()

    def visit(name: str) -> None:
        node = spec.node(name)
        if node.on_error != graph_model.OnError.FAIL or name in hard:
            return
        hard.add(name)
        for _, ref in node.references():
            visit(ref)

    visit(spec.root)
    return {name for name in hard if isinstance(spec.node(name), ModelNode)}


def describe(spec: Graph, model: str, route: str, found: Found) -> dict[str, Any]:
    """The V2 model metadata of the graph; raises the ``NodeProblem`` that prevents it."""
    return {
        "name": model,
        "platform": PLATFORM,
        "inputs": _inputs(spec, spec.root, found),
        "outputs": _outputs(spec, spec.root, found),
        "properties": {"route": route, "root": spec.root},
    }


def _component(node: ModelNode, found: Found, field: str) -> list[TensorMeta]:
    document = found.get(node.name)
    if document is None:
        raise NodeProblem(node.name, 503, f"the metadata of component {node.model!r} was not fetched")
    if isinstance(document, NodeProblem):
        raise document
    return document[field]  # type: ignore[no-any-return]


def _first_answering(names: list[str], describe_one: Callable[[str], list[TensorMeta]]) -> list[TensorMeta]:
    problem: NodeProblem | None = None
    for name in names:
        try:
            return describe_one(name)
        except NodeProblem as exc:
            problem = problem or exc
    assert problem is not None
    raise problem


def _targets(node: SwitchNode) -> list[str]:
    return [case.node for case in node.cases] + ([node.default] if node.default else [])


def _inputs(spec: Graph, name: str, found: Found) -> list[TensorMeta]:
    node = spec.node(name)
    if isinstance(node, ModelNode):
        return _component(node, found, "inputs")
    if isinstance(node, SequenceNode):
        return _inputs(spec, node.children[0], found)
    candidates = node.children if isinstance(node, EnsembleNode) else _targets(node)
    return _first_answering(candidates, lambda child: _inputs(spec, child, found))


def _outputs(spec: Graph, name: str, found: Found) -> list[TensorMeta]:
    node = spec.node(name)
    if isinstance(node, ModelNode):
        return _component(node, found, "outputs")
    if isinstance(node, SequenceNode):
        return _outputs(spec, node.children[-1], found)
    if isinstance(node, SwitchNode):
        return _first_answering(_targets(node), lambda target: _outputs(spec, target, found))
    if node.combiner.node is not None:
        return _outputs(spec, node.combiner.node, found)
    return _combined_outputs(spec, node, found)


def _combined_outputs(spec: Graph, node: EnsembleNode, found: Found) -> list[TensorMeta]:
    """The ensemble's tensors as ``combiners.combine`` answers them (children that answer count)."""
    answered: list[list[TensorMeta]] = []
    problem: NodeProblem | None = None
    for child in node.children:
        try:
            answered.append(_outputs(spec, child, found))
        except NodeProblem as exc:
            problem = problem or exc
    if not answered:
        assert problem is not None
        raise problem
    by_child = [{t["name"]: t for t in tensors} for tensors in answered]
    wanted = node.combiner.output
    if wanted is not None:
        names = [wanted]
    else:
        names = [t["name"] for t in answered[0] if all(t["name"] in named for named in by_child[1:])]
    if names and all(name in named for name in names for named in by_child):
        return [_combined(node.combiner.type, name, [named[name] for named in by_child]) for name in names]
    if wanted is None and all(len(tensors) == 1 for tensors in answered):
        return [_combined(node.combiner.type, node.name, [tensors[0] for tensors in answered])]
    listing = "; ".join(", ".join(named) or "none" for named in by_child)
    what = f"no output {wanted!r}" if wanted else "no output name in common"
    raise NodeProblem(node.name, 502, f"the children answer {what} ({listing})")


def _combined(kind: graph_model.CombinerType, name: str, tensors: list[TensorMeta]) -> TensorMeta:
    datatypes = [t["datatype"] for t in tensors]
    if kind in _AVERAGES:
        datatype = "FP32" if all(d in _SMALL_FLOATS for d in datatypes) else "FP64"
    else:
        try:
            datatype = common_datatype(datatypes, f"output {name!r}")
        except TensorError:
            datatype = datatypes[0]  # the combination itself will say what is wrong, naming the node
        if datatype == "BOOL" and kind == graph_model.CombinerType.SUM:
            datatype = "INT64"
    return {"name": name, "datatype": datatype, "shape": list(tensors[0]["shape"])}


def component_metadata(node: ModelNode, status: int, body: bytes) -> dict[str, Any]:
    """A component's metadata answer, checked; ``NodeProblem`` when it is an error or unusable."""
    if status != 200:
        code = 503 if status in (404, 503) else 502
        raise NodeProblem(node.name, code, f"component {node.model!r} answered {status} to its metadata")
    try:
        document = orjson.loads(body)
        for field in ("inputs", "outputs"):
            tensors = document[field]
            if not isinstance(tensors, list) or not all(_is_tensor_meta(t) for t in tensors):
                raise ValueError(f"{field!r} is not a list of tensors with name, datatype and shape")
    except (orjson.JSONDecodeError, TypeError, KeyError, ValueError) as exc:
        raise NodeProblem(
            node.name, 502, f"component {node.model!r} answered invalid metadata: {exc}"
        ) from None
    return document  # type: ignore[no-any-return]


def _is_tensor_meta(tensor: Any) -> bool:
    return (
        isinstance(tensor, dict)
        and isinstance(tensor.get("name"), str)
        and isinstance(tensor.get("datatype"), str)
        and isinstance(tensor.get("shape"), list)
    )


def readiness(spec: Graph, model: str, ready: dict[str, NodeProblem | None]) -> tuple[bool, dict[str, Any]]:
    """Ready when every hard Model node's component is; soft (Skip/Default) ones are only reported."""
    hard = hard_model_nodes(spec)
    blocking = [problem for name, problem in ready.items() if problem is not None and name in hard]
    answer: dict[str, Any] = {
        "name": model,
        "ready": not blocking,
        "nodes": {name: problem is None for name, problem in ready.items()},
    }
    if blocking:
        answer["error"] = str(blocking[0])
        answer["node"] = blocking[0].node
    return not blocking, answer


# -- fetching and caching ----------------------------------------------------------------------------


@dataclass(eq=False)
class GraphDescriptions:
    """Metadata and readiness of compiled graphs, read from their components through ``fetch``."""

    fetch: Fetch
    _: KW_ONLY
    ttl_seconds: float = 30.0
    timeout_seconds: float = 2.0
    clock: Callable[[], float] = time.monotonic
    _cached: weakref.WeakKeyDictionary[CompiledGraph, tuple[float, dict[str, Any]]] = field(
        default_factory=weakref.WeakKeyDictionary, init=False
    )
    _pending: weakref.WeakKeyDictionary[CompiledGraph, asyncio.Task[dict[str, Any]]] = field(
        default_factory=weakref.WeakKeyDictionary, init=False
    )

    async def metadata(self, graph: CompiledGraph) -> dict[str, Any]:
        """The graph's V2 metadata; ``NodeProblem`` names the node that prevents it."""
        cached = self._cached.get(graph)
        if cached is not None and cached[0] > self.clock():
            return cached[1]
        # Concurrent callers share one round of fetches; shielded so one caller leaving cancels nothing.
        task = self._pending.get(graph)
        if task is None:
            task = self._pending[graph] = asyncio.get_running_loop().create_task(self._describe(graph))
            task.add_done_callback(lambda done: self._settled(graph, done))
        return await asyncio.shield(task)

    def _settled(self, graph: CompiledGraph, task: asyncio.Task[dict[str, Any]]) -> None:
        self._pending.pop(graph, None)
        if not task.cancelled():
            task.exception()  # read here too: a failure whose callers all left is no "never retrieved" error

    async def readiness(self, graph: CompiledGraph) -> tuple[bool, dict[str, Any]]:
        nodes = reachable_model_nodes(graph.spec)
        problems = await asyncio.gather(*(self._ready(node) for node in nodes))
        return readiness(graph.spec, graph.model, dict(zip([n.name for n in nodes], problems, strict=True)))

    async def _describe(self, graph: CompiledGraph) -> dict[str, Any]:
        nodes = reachable_model_nodes(graph.spec)
        documents = await asyncio.gather(*(self._metadata_of(node) for node in nodes))
        found: Found = dict(zip([n.name for n in nodes], documents, strict=True))
        document = describe(graph.spec, graph.model, graph.name, found)
        self._cached[graph] = (self.clock() + self.ttl_seconds, document)
        return document

    async def _metadata_of(self, node: ModelNode) -> dict[str, Any] | NodeProblem:
        try:
            status, body = await self._get(node, f"/v2/models/{node.model}")
            return component_metadata(node, status, body)
        except NodeProblem as problem:
            return problem

    async def _ready(self, node: ModelNode) -> NodeProblem | None:
        try:
            status, _ = await self._get(node, f"/v2/models/{node.model}/ready")
        except NodeProblem as problem:
            return problem
        if status == 200:
            return None
        return NodeProblem(node.name, 503, f"component {node.model!r} is not ready (it answered {status})")

    async def _get(self, node: ModelNode, path: str) -> tuple[int, bytes]:
        try:
            return await self.fetch(node.upstream, path, self.timeout_seconds)
        except ComponentUnavailable as exc:
            raise NodeProblem(node.name, 503, f"component {node.model!r} is unavailable: {exc}") from None
        except TimeoutError:
            message = f"component {node.model!r} did not answer within {self.timeout_seconds:g} s"
            raise NodeProblem(node.name, 504, message) from None
        except Exception as exc:
            raise NodeProblem(node.name, 502, f"calling component {node.model!r} failed: {exc}") from None
