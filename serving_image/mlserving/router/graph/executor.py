"""Running a graph: Open Inference Protocol V2 request in, V2 response out.

``compile_graph`` turns the spec into plain node objects once per route table; ``run_graph`` runs one
request through them. Components are reached through an injected ``Call`` (the router passes its
pooled upstream client, tests pass plain functions), so nothing here knows about sockets.

Failures carry the node where they started. A node's ``onError`` decides what its parent sees: the
failure itself (Fail), nothing (Skip, inside an ensemble) or the node's ``defaultOutputs`` (Default).
A failure that reaches the root answers with its status: 400/413/422 when a component rejected the
input, 502 for a failed or invalid answer, 503 when nothing answered, 504 on a timeout.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

from mlserving.http import Headers
from mlserving.router.graph.combiners import combine, renormalised, select_outputs, stack_input
from mlserving.router.graph.model import (
    EnsembleNode,
    Graph,
    ModelNode,
    OnError,
    SequenceNode,
    SwitchNode,
)
from mlserving.router.graph.request import RequestError, parse_request, requested_outputs
from mlserving.router.graph.tensors import (
    COMPARISONS,
    Tensor,
    TensorError,
    batch_rows,
    checked_flat,
    repeated,
    row_size,
    scatter_rows,
    take_rows,
)

if TYPE_CHECKING:
    from mlserving.router.graph.events import EventPublisher
    from mlserving.router.graph.metrics import GraphMetrics

Call = Callable[[str, str, bytes, Headers, float], Awaitable[tuple[int, Headers, bytes]]]
"""``call(upstream, path, body, headers, timeout_seconds) -> (status, headers, body)``: one POST.

Raise ``ComponentUnavailable`` when nothing answered (refused, unresolvable), ``TimeoutError`` when
the answer did not come in time; any other exception counts as a failed answer (502).
"""

VARIANT_HEADER = b"x-mlrollouts-variant"
ID_HEADER = b"x-mlrollouts-id"
SKIPPED_HEADER = b"x-mlrollouts-graph-skipped"
DEFAULTED_HEADER = b"x-mlrollouts-graph-defaulted"
_JSON = (b"content-type", b"application/json")
# Headers the graph sets itself or that only concern the client's own connection.
_NOT_FORWARDED = frozenset(
    {b"connection", b"keep-alive", b"proxy-authorization", b"te", b"trailer", b"transfer-encoding"}
    | {b"upgrade", b"host", b"content-length", b"content-type", b"expect", b"accept-encoding"}
    | {b"inference-header-content-length", ID_HEADER}
)
# Component errors that mean "the input does not fit": passed on so the client sees its own mistake.
_CLIENT_ERRORS = frozenset({400, 413, 422})


class ComponentUnavailable(Exception):
    """Nothing answered the call: connection refused, host unknown, connect timeout."""


class NodeFailure(Exception):
    """A node failed; ``node`` is where the failure started, ``status`` the HTTP status it maps to."""

    def __init__(self, node: str, status: int, message: str) -> None:
        super().__init__(f"node {node!r}: {message}")
        self.node = node
        self.status = status


@dataclass
class GraphResult:
    """What one request produced; ``report`` is what the response says about the nodes."""

    status: int
    outputs: list[Tensor] = field(default_factory=list)
    components: dict[str, dict[str, str]] = field(default_factory=dict)
    skipped: list[dict[str, Any]] = field(default_factory=list)
    defaulted: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    failed_nodes: list[str] = field(default_factory=list)

    def report(self) -> dict[str, Any]:
        report: dict[str, Any] = {"components": self.components}
        if self.skipped:
            report["skipped"] = self.skipped
        if self.defaulted:
            report["defaulted"] = self.defaulted
        return report


class _Skipped:
    """A child left out of its ensemble; keeps the failure for the ensemble's own error."""

    __slots__ = ("failure",)

    def __init__(self, failure: NodeFailure) -> None:
        self.failure = failure


class _Run:
    """The state of one request: what the nodes share while it runs."""

    __slots__ = (
        "call", "deadline", "graph", "headers", "limit", "loop", "parameters", "result", "timeout", "waiting",
    )  # fmt: skip

    def __init__(
        self, graph: CompiledGraph, call: Call, headers: list[tuple[bytes, bytes]], parameters: Any
    ) -> None:
        self.graph = graph
        self.call = call
        self.headers = headers
        self.parameters = parameters
        self.loop = asyncio.get_running_loop()
        self.deadline = self.loop.time() + graph.timeout
        # The graph's timeout, once entered; asked rather than the clock, which some loops (uvloop)
        # read in whole milliseconds, so a timer may fire just before the deadline it was set for.
        self.timeout: asyncio.Timeout | None = None
        self.limit = asyncio.Semaphore(graph.max_concurrency) if graph.needs_limit else None
        self.waiting: list[str] = []  # components still called when the graph timed out
        self.result = GraphResult(status=200)

    def call_timeout(self, node_timeout: float | None) -> float:
        # Capped: (start + timeout) - start can exceed timeout by a rounding error.
        remaining = min(self.deadline - self.loop.time(), self.graph.timeout)
        return max(0.0, remaining if node_timeout is None else min(node_timeout, remaining))

    def expired(self) -> bool:
        return self.timeout is not None and self.timeout.expired()


# -- nodes -------------------------------------------------------------------------------------------


class _Node:
    __slots__ = ("defaults", "graph_name", "metrics", "name", "on_error", "timeout")

    def __init__(self, spec: Any, graph_name: str, metrics: GraphMetrics | None) -> None:
        self.name: str = spec.name
        self.timeout: float | None = spec.timeout_seconds
        self.on_error: OnError = spec.on_error
        self.defaults = [(d.name, d.datatype, d.value) for d in spec.default_outputs or ()]
        self.graph_name = graph_name
        self.metrics = metrics

    def link(self, spec: Any, nodes: dict[str, _Node]) -> None:
        """Resolve the names of the nodes this one calls (after every node exists)."""

    async def run(self, run: _Run, inputs: list[Tensor]) -> list[Tensor]:
        raise NotImplementedError

    def parallel_calls(self) -> int:
        """The most component calls this node can have in flight at once."""
        raise NotImplementedError

    def observe(self, code: int, started: float) -> None:
        if self.metrics is not None:
            self.metrics.observe_node(self.graph_name, self.name, code, time.perf_counter() - started)

    def recover(self, run: _Run, inputs: list[Tensor], failure: NodeFailure) -> list[Tensor] | _Skipped:
        if self.on_error == OnError.FAIL:
            raise failure
        record = {"node": self.name, "status": failure.status, "error": str(failure)}
        if self.on_error == OnError.SKIP:
            run.result.skipped.append(record)
            return _Skipped(failure)
        run.result.defaulted.append(record)
        count = batch_rows(inputs)
        return [repeated(name, datatype, value, count) for name, datatype, value in self.defaults]


async def _execute(node: _Node, run: _Run, inputs: list[Tensor]) -> list[Tensor] | _Skipped:
    """Run a node under its timeout and error policy, and measure it."""
    started = time.perf_counter()
    try:
        if node.timeout is None:
            outputs = await node.run(run, inputs)
        else:
            async with asyncio.timeout(node.timeout):
                outputs = await node.run(run, inputs)
    except NodeFailure as failure:
        node.observe(failure.status, started)
        return node.recover(run, inputs, failure)
    except TimeoutError:
        node.observe(504, started)
        expired = NodeFailure(node.name, 504, f"no answer within its timeout of {node.timeout:g} s")
        return node.recover(run, inputs, expired)
    except asyncio.CancelledError:
        if run.expired():  # the graph's deadline, not a sibling's failure: the node was too slow
            node.observe(504, started)
            if isinstance(node, _ModelNode):
                run.waiting.append(node.name)
        raise
    node.observe(200, started)
    return outputs


async def _concurrently(calls: list[Coroutine[Any, Any, Any]]) -> list[Any]:
    """Await all; on the first failure, cancel the rest and wait for them to stop.

    Nothing keeps calling components for a request that has already failed. (When this task itself
    is cancelled, gather cancels the children and waits for them.)
    """
    if len(calls) == 1:
        return [await calls[0]]
    loop = asyncio.get_running_loop()
    tasks = [loop.create_task(call) for call in calls]
    try:
        return await asyncio.gather(*tasks)
    except Exception:
        running = [task for task in tasks if not task.done()]
        for task in running:
            task.cancel()
        if running:
            await asyncio.wait(running)
        raise


class _ModelNode(_Node):
    __slots__ = ("model", "path", "upstream")

    def __init__(self, spec: ModelNode, graph_name: str, metrics: GraphMetrics | None) -> None:
        super().__init__(spec, graph_name, metrics)
        self.upstream = spec.upstream
        self.model = spec.model
        self.path = f"/v2/models/{spec.model}/infer"

    def parallel_calls(self) -> int:
        return 1

    async def run(self, run: _Run, inputs: list[Tensor]) -> list[Tensor]:
        request: dict[str, Any] = {"inputs": inputs}
        if run.parameters:
            request["parameters"] = run.parameters
        try:
            body = orjson.dumps(request)
        except orjson.JSONEncodeError as exc:  # e.g. data nested deeper than JSON encoders go
            raise NodeFailure(self.name, 400, f"the inputs cannot be sent to {self.model!r}: {exc}") from None
        timeout = run.call_timeout(self.timeout)
        try:
            if run.limit is None:
                status, headers, payload = await run.call(
                    self.upstream, self.path, body, run.headers, timeout
                )
            else:
                async with run.limit:
                    status, headers, payload = await run.call(
                        self.upstream, self.path, body, run.headers, timeout
                    )
        except ComponentUnavailable as exc:
            raise NodeFailure(self.name, 503, f"component {self.model!r} is unavailable: {exc}") from None
        except TimeoutError:
            raise NodeFailure(
                self.name, 504, f"component {self.model!r} did not answer within {timeout:g} s"
            ) from None
        except Exception as exc:
            raise NodeFailure(self.name, 502, f"calling component {self.model!r} failed: {exc}") from None
        if not 200 <= status < 300:
            code = status if status in _CLIENT_ERRORS else 502
            raise NodeFailure(
                self.name, code, f"component {self.model!r} answered {status}: {_error_text(payload)}"
            )
        return self._outputs(run, headers, payload)

    def _outputs(self, run: _Run, headers: Headers, payload: bytes) -> list[Tensor]:
        try:
            response = orjson.loads(payload)
            outputs = response["outputs"]
            if not isinstance(outputs, list) or not all(_is_tensor(t) for t in outputs):
                raise ValueError("'outputs' is not a list of tensors with name, datatype, shape and data")
        except (orjson.JSONDecodeError, TypeError, KeyError, ValueError) as exc:
            message = f"component {self.model!r} answered an invalid inference response: {exc}"
            raise NodeFailure(self.name, 502, message) from None
        component = {"model": self.model}
        for name, value in headers:
            if name == VARIANT_HEADER:
                component["variant"] = value.decode("latin-1")
            elif name == ID_HEADER:
                component["id"] = value.decode("latin-1")
        if isinstance(response.get("id"), str):
            component["id"] = response["id"]
        run.result.components[self.name] = component
        return outputs


class _SequenceNode(_Node):
    __slots__ = ("children", "mappings")

    def __init__(self, spec: SequenceNode, graph_name: str, metrics: GraphMetrics | None) -> None:
        super().__init__(spec, graph_name, metrics)
        self.mappings = spec.mappings
        self.children: list[_Node] = []

    def link(self, spec: SequenceNode, nodes: dict[str, _Node]) -> None:
        self.children = [nodes[name] for name in spec.children]

    def parallel_calls(self) -> int:
        return max(child.parallel_calls() for child in self.children)

    async def run(self, run: _Run, inputs: list[Tensor]) -> list[Tensor]:
        last = len(self.children) - 1
        outputs: list[Tensor] = inputs
        for index, child in enumerate(self.children):
            # Validation keeps Skip out of sequences, so a child answers tensors or raises.
            outputs = await _execute(child, run, inputs)  # type: ignore[assignment]
            if index < last:
                inputs = self._hand_over(index, outputs)
        return outputs

    def _hand_over(self, index: int, outputs: list[Tensor]) -> list[Tensor]:
        mapping = self.mappings[index] if self.mappings else None
        if not mapping:
            return outputs
        by_name = {tensor["name"]: tensor for tensor in outputs}
        handed = []
        for output, input_name in mapping.items():
            tensor = by_name.get(output)
            if tensor is None:
                source, target = self.children[index].name, self.children[index + 1].name
                raise NodeFailure(
                    self.name,
                    502,
                    f"mappings.{index}: {source!r} answered no output {output!r} for {target!r} "
                    f"(outputs: {', '.join(by_name) or 'none'})",
                )
            handed.append({**tensor, "name": input_name})
        return handed


class _EnsembleNode(_Node):
    __slots__ = ("bias", "children", "kind", "output", "stack", "stack_input", "weights")

    def __init__(self, spec: EnsembleNode, graph_name: str, metrics: GraphMetrics | None) -> None:
        super().__init__(spec, graph_name, metrics)
        combiner = spec.combiner
        self.kind = combiner.type
        self.weights = combiner.weights
        self.bias = combiner.bias
        self.output = combiner.output
        self.stack_input = combiner.input
        self.children: list[_Node] = []
        self.stack: _Node | None = None

    def link(self, spec: EnsembleNode, nodes: dict[str, _Node]) -> None:
        self.children = [nodes[name] for name in spec.children]
        self.stack = nodes[spec.combiner.node] if spec.combiner.node is not None else None

    def parallel_calls(self) -> int:
        return sum(child.parallel_calls() for child in self.children)

    async def run(self, run: _Run, inputs: list[Tensor]) -> list[Tensor]:
        results = await _concurrently([_execute(child, run, inputs) for child in self.children])
        kept = [i for i, result in enumerate(results) if not isinstance(result, _Skipped)]
        if not kept:
            statuses = {result.failure.status for result in results}
            status = statuses.pop() if len(statuses) == 1 else 502
            raise NodeFailure(self.name, status, "every child failed and was skipped")
        names = [self.children[i].name for i in kept]
        try:
            selected = select_outputs(self.name, names, [results[i] for i in kept], self.output)
            if self.stack is not None:
                meta_inputs = [stack_input(self.stack_input, selected, names)]
            else:
                weights = renormalised(self.kind, self.weights, kept) if self.weights else None
                return [combine(self.kind, name, tensors, weights, self.bias) for name, tensors in selected]
        except (TensorError, TypeError) as exc:  # TypeError: values that are not numbers
            raise NodeFailure(self.name, 502, f"cannot combine the children's outputs: {exc}") from None
        # Validation keeps Skip away from the stacking node: it answers tensors or raises.
        return await _execute(self.stack, run, meta_inputs)  # type: ignore[return-value]


class _SwitchNode(_Node):
    __slots__ = ("cases", "default", "targets")

    def __init__(self, spec: SwitchNode, graph_name: str, metrics: GraphMetrics | None) -> None:
        super().__init__(spec, graph_name, metrics)
        self.cases = [
            (c.when.input, c.when.feature, COMPARISONS[c.when.op.value], c.when.value) for c in spec.cases
        ]
        self.targets: list[_Node] = []
        self.default: _Node | None = None

    def link(self, spec: SwitchNode, nodes: dict[str, _Node]) -> None:
        self.targets = [nodes[case.node] for case in spec.cases]
        self.default = nodes[spec.default] if spec.default is not None else None
        if self.default is not None:
            self.targets.append(self.default)

    def parallel_calls(self) -> int:
        return sum(target.parallel_calls() for target in self.targets)

    async def run(self, run: _Run, inputs: list[Tensor]) -> list[Tensor]:
        branches = self._branches(inputs)
        first = branches[0] if branches else 0
        if all(branch == first for branch in branches):
            return await _execute(self.targets[first], run, inputs)  # type: ignore[return-value]
        groups: dict[int, list[int]] = {}
        for row, branch in enumerate(branches):
            groups.setdefault(branch, []).append(row)
        try:
            parts = {b: [take_rows(t, r, f"input {t['name']!r}") for t in inputs] for b, r in groups.items()}
        except TensorError as exc:
            raise NodeFailure(self.name, 400, str(exc)) from None
        results = await _concurrently([_execute(self.targets[b], run, parts[b]) for b in groups])
        return self._merge(list(groups.items()), results, len(branches))

    def _branches(self, inputs: list[Tensor]) -> list[int]:
        """For every row, the index of the target: the first case that holds, else the default."""
        features = [self._feature_column(index, inputs) for index in range(len(self.cases))]
        count = batch_rows(inputs)
        branches = []
        for row in range(count):
            for index, (_, _, test, value) in enumerate(self.cases):
                element = features[index][row]
                if not isinstance(element, int | float | str) or isinstance(element, str) != isinstance(
                    value, str
                ):
                    raise NodeFailure(
                        self.name, 400, f"cases.{index}: compares {element!r} (row {row}) with {value!r}"
                    )
                if test(element, value):
                    branches.append(index)
                    break
            else:
                if self.default is None:
                    raise NodeFailure(self.name, 400, f"row {row} matches no case and there is no default")
                branches.append(len(self.cases))
        return branches

    def _feature_column(self, index: int, inputs: list[Tensor]) -> list[Any]:
        name, feature, _, _ = self.cases[index]
        where = f"cases.{index}.when"
        tensor = inputs[0] if name is None else next((t for t in inputs if t["name"] == name), None)
        if tensor is None:
            known = ", ".join(t["name"] for t in inputs)
            raise NodeFailure(self.name, 400, f"{where}.input {name!r} is not an input (inputs: {known})")
        size = row_size(tensor)
        if feature >= size:
            raise NodeFailure(
                self.name,
                400,
                f"{where}.feature {feature} is out of range: input {tensor['name']!r} has {size} per row",
            )
        try:
            data = checked_flat(tensor, f"input {tensor['name']!r}")
        except TensorError as exc:
            raise NodeFailure(self.name, 400, str(exc)) from None
        return data[feature::size]

    def _merge(
        self, groups: list[tuple[int, list[int]]], results: list[list[Tensor]], count: int
    ) -> list[Tensor]:
        """Put each branch's rows back where they came from."""
        merged = []
        for output in results[0]:
            name = output["name"]
            parts = []
            for (branch, rows_of_branch), tensors in zip(groups, results, strict=True):
                tensor = next((t for t in tensors if t["name"] == name), None)
                if tensor is None:
                    target = self.targets[branch].name
                    raise NodeFailure(self.name, 502, f"{target!r} answered no output {name!r}")
                parts.append((rows_of_branch, tensor))
            try:
                merged.append(scatter_rows(parts, count, f"output {name!r}"))
            except TensorError as exc:
                raise NodeFailure(self.name, 502, f"cannot merge the branches' rows: {exc}") from None
        return merged


_NODE_TYPES: dict[type, type[_Node]] = {
    ModelNode: _ModelNode,
    SequenceNode: _SequenceNode,
    EnsembleNode: _EnsembleNode,
    SwitchNode: _SwitchNode,
}


# -- the graph ---------------------------------------------------------------------------------------


@dataclass(eq=False)
class CompiledGraph:
    """A graph ready to run; built once per route table."""

    name: str
    model: str
    spec: Graph
    root: _Node
    nodes: dict[str, _Node]
    timeout: float
    max_concurrency: int
    needs_limit: bool
    metrics: GraphMetrics | None = None
    events: EventPublisher | None = None

    def model_node(self, name: str) -> tuple[str, str] | None:
        """(upstream, model) of a Model node, e.g. to forward a component's feedback."""
        node = self.nodes.get(name)
        return (node.upstream, node.model) if isinstance(node, _ModelNode) else None


def compile_graph(
    spec: Graph,
    name: str,
    model: str | None = None,
    metrics: GraphMetrics | None = None,
    events: EventPublisher | None = None,
) -> CompiledGraph:
    """``name`` is the `graph` metric label (the route name), ``model`` the model name clients call.

    ``events`` receives every result; ``GraphRuntime`` builds it from ``spec.events``.
    """
    nodes = {node.name: _NODE_TYPES[type(node)](node, name, metrics) for node in spec.nodes}
    for node_spec in spec.nodes:
        nodes[node_spec.name].link(node_spec, nodes)
    root = nodes[spec.root]
    return CompiledGraph(
        name=name,
        model=model or name,
        spec=spec,
        root=root,
        nodes=nodes,
        timeout=spec.timeout_seconds,
        max_concurrency=spec.max_concurrency,
        needs_limit=root.parallel_calls() > spec.max_concurrency,
        metrics=metrics,
        events=events,
    )


async def execute_graph(
    graph: CompiledGraph, inputs: list[Tensor], call: Call, headers: Headers = (), parameters: Any = None
) -> GraphResult:
    """Run validated inputs through the graph; failures come back as a result with status and error."""
    run = _Run(graph, call, _forwarded(headers), parameters)
    result = run.result
    try:
        async with asyncio.timeout_at(run.deadline) as run.timeout:
            outputs = await _execute(graph.root, run, inputs)
    except NodeFailure as failure:
        result.status, result.error, result.failed_nodes = failure.status, str(failure), [failure.node]
        return result
    except TimeoutError:
        waiting = sorted(set(run.waiting))
        result.status, result.failed_nodes = 504, waiting
        result.error = f"graph {graph.name!r} did not answer within {graph.timeout:g} s" + (
            f" (waiting for {', '.join(waiting)})" if waiting else ""
        )
        return result
    # The root may only be Skip-free (validation), so it answers tensors.
    result.outputs = outputs  # type: ignore[assignment]
    return result


async def run_graph(
    graph: CompiledGraph,
    body: bytes | dict[str, Any],
    call: Call,
    *,
    headers: Headers = (),
    response_id: str | None = None,
) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
    """One inference request through the graph: ``(status, JSON body, response headers)``.

    ``headers`` are the client's request headers (sticky keys and tracing reach the components);
    ``response_id`` is the id the response carries (the router's signed id), else the request's.
    """
    started = time.perf_counter()
    status = 500
    try:
        try:
            request = parse_request(body)
        except RequestError as exc:
            status = exc.status
            return status, orjson.dumps({"error": str(exc)}), [_JSON]
        result = await execute_graph(graph, request["inputs"], call, headers, request.get("parameters"))
        status = result.status
        if result.error is not None:
            return status, _error_body(result), [_JSON]
        try:
            outputs = requested_outputs(result.outputs, request.get("outputs"), graph.name)
        except RequestError as exc:
            status = exc.status
            return status, orjson.dumps({"error": str(exc)}), [_JSON]
        response: dict[str, Any] = {"model_name": graph.model}
        response_id = response_id or request.get("id")
        if response_id is not None:
            response["id"] = response_id
        response["outputs"] = outputs
        response["parameters"] = {"graph": result.report()}
        if graph.events is not None:
            graph.events.submit(response, request["inputs"])
        return status, orjson.dumps(response), _report_headers(result)
    finally:
        if graph.metrics is not None:
            graph.metrics.observe_request(graph.name, status, time.perf_counter() - started)


def _error_body(result: GraphResult) -> bytes:
    error: dict[str, Any] = {"error": result.error}
    if result.failed_nodes:
        error["node"] = result.failed_nodes[0]
        error["nodes"] = result.failed_nodes
    if result.skipped or result.defaulted:
        error["graph"] = result.report()
    return orjson.dumps(error)


def _report_headers(result: GraphResult) -> list[tuple[bytes, bytes]]:
    headers = [_JSON]
    if result.skipped:
        headers.append((SKIPPED_HEADER, ",".join(r["node"] for r in result.skipped).encode()))
    if result.defaulted:
        headers.append((DEFAULTED_HEADER, ",".join(r["node"] for r in result.defaulted).encode()))
    return headers


def _forwarded(headers: Headers) -> list[tuple[bytes, bytes]]:
    forwarded = [(name, value) for name, value in headers if name.lower() not in _NOT_FORWARDED]
    forwarded.append(_JSON)
    return forwarded


def _error_text(payload: bytes) -> str:
    try:
        decoded = orjson.loads(payload)
        text = decoded["error"] if isinstance(decoded, dict) and "error" in decoded else payload.decode()
    except (orjson.JSONDecodeError, UnicodeDecodeError):
        text = payload.decode("utf-8", "replace")
    text = str(text).strip() or "(empty body)"
    return text if len(text) <= 300 else text[:300] + "..."


def _is_tensor(tensor: Any) -> bool:
    return (
        isinstance(tensor, dict)
        and isinstance(tensor.get("name"), str)
        and isinstance(tensor.get("datatype"), str)
        and isinstance(tensor.get("shape"), list)
        and isinstance(tensor.get("data"), list)
    )


__all__ = [
    "Call",
    "CompiledGraph",
    "ComponentUnavailable",
    "GraphResult",
    "NodeFailure",
    "RequestError",
    "compile_graph",
    "execute_graph",
    "parse_request",
    "run_graph",
]
