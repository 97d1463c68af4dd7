"""The graph of a composite model, as the operator writes it into a route of the route table.

A graph is a set of named nodes and a root. ``Model`` nodes call a component (the entry point of a
ModelDeployment or an Experiment) over the Open Inference Protocol; ``Sequence``, ``Ensemble`` and
``Switch`` nodes combine other nodes by name. Field names are camelCase in YAML/JSON.

Example (YAML, the ``graph`` of a route)::

    root: score
    timeoutSeconds: 2
    nodes:
      - {name: income, type: Model, upstream: "http://credit-income:8080", model: credit-income}
      - name: history
        type: Model
        upstream: "http://credit-history:8080"
        model: credit-history
        timeoutSeconds: 0.3
        onError: Default
        defaultOutputs: [{name: value, datatype: FP64, value: 0.5}]
      - name: score
        type: Ensemble
        children: [income, history]
        combiner: {type: weightedMean, weights: [0.7, 0.3], output: value}
"""

from __future__ import annotations

import math
from enum import StrEnum
from typing import Annotated, Literal, Self

from pydantic import Field, field_validator, model_validator

from mlserving.router.spec import CamelSpec, ModelName, check_http_url, dns_label

MAX_NODES = 64
MAX_CHILDREN = 32

DATATYPES = frozenset(
    {"BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64"}
    | {"FP16", "FP32", "FP64", "BYTES"}
)
Scalar = bool | int | float | str


class NodeType(StrEnum):
    MODEL = "Model"
    SEQUENCE = "Sequence"
    ENSEMBLE = "Ensemble"
    SWITCH = "Switch"


class OnError(StrEnum):
    """What a failing node (error answer, connection failure, timeout) does to its parent."""

    FAIL = "Fail"
    SKIP = "Skip"
    DEFAULT = "Default"


class CombinerType(StrEnum):
    MEAN = "mean"
    WEIGHTED_MEAN = "weightedMean"
    VOTE = "vote"
    MAX = "max"
    MIN = "min"
    SUM = "sum"
    LINEAR = "linear"
    STACK = "stack"


class CaseOp(StrEnum):
    EQ = "eq"
    NE = "ne"
    LT = "lt"
    LE = "le"
    GT = "gt"
    GE = "ge"


class DefaultOutput(CamelSpec):
    """One output tensor a node answers with when it fails under ``onError: Default``."""

    name: str = Field(min_length=1, max_length=253, description="Output tensor name.")
    datatype: str = Field(default="FP64", description="Open Inference Protocol datatype, e.g. FP64, INT64.")
    value: Scalar | list[Scalar] = Field(
        description="The value of one row: a scalar (shape [N]) or a list (shape [N, len]), repeated per row."
    )

    @field_validator("datatype")
    @classmethod
    def _datatype(cls, value: str) -> str:
        if value not in DATATYPES:
            raise ValueError(f"datatype {value!r} is not one of {', '.join(sorted(DATATYPES))}")
        return value

    @field_validator("value")
    @classmethod
    def _value(cls, value: Scalar | list[Scalar]) -> Scalar | list[Scalar]:
        values = value if isinstance(value, list) else [value]
        if not values:
            raise ValueError("value must not be an empty list")
        if any(isinstance(v, float) and not math.isfinite(v) for v in values):
            raise ValueError("value must be finite (JSON has no NaN or Infinity)")
        return value

    @model_validator(mode="after")
    def _value_fits_datatype(self) -> Self:
        values = self.value if isinstance(self.value, list) else [self.value]
        if (self.datatype == "BYTES") != all(isinstance(v, str) for v in values):
            kind = "strings" if self.datatype == "BYTES" else "numbers or booleans"
            raise ValueError(f"value: datatype {self.datatype} needs {kind}")
        return self


class _NodeBase(CamelSpec):
    # Node names end up in metric labels and response parameters.
    name: Annotated[str, dns_label("node name", "lowercase letters, digits, '-'")] = Field(
        description="Node name; the `node` label of mlgraph_node_* metrics."
    )
    timeout_seconds: float | None = Field(
        default=None, gt=0, le=3600, description="Time the node may take; exceeded -> the node fails (504)."
    )
    on_error: OnError = Field(
        default=OnError.FAIL,
        description="Fail: the failure goes up to the parent. Skip: an ensemble drops this child. "
        "Default: the node answers defaultOutputs.",
    )
    default_outputs: list[DefaultOutput] | None = Field(
        default=None, min_length=1, description="The answer of a failed node under onError: Default."
    )

    @model_validator(mode="after")
    def _default_outputs(self) -> Self:
        if self.on_error == OnError.DEFAULT and self.default_outputs is None:
            raise ValueError("defaultOutputs: onError Default needs defaultOutputs")
        if self.on_error != OnError.DEFAULT and self.default_outputs is not None:
            raise ValueError("defaultOutputs: only used with onError Default")
        if self.default_outputs is not None:
            names = [output.name for output in self.default_outputs]
            if len(set(names)) != len(names):
                raise ValueError(f"defaultOutputs: duplicate output names {names}")
        return self

    def references(self) -> list[tuple[str, str]]:
        """(field, node name) of every node this node calls."""
        return []


class ModelNode(_NodeBase):
    """Calls one component: ``POST {upstream}/v2/models/{model}/infer``."""

    type: Literal["Model"] = "Model"
    upstream: str = Field(
        description="Base URL of the component's entry point (a ModelDeployment's or Experiment's Service)."
    )
    model: ModelName = Field(description="Model name the component serves, as in /v2/models/{model}/infer.")

    @field_validator("upstream")
    @classmethod
    def _upstream(cls, value: str) -> str:
        return check_http_url(value, "upstream")


class SequenceNode(_NodeBase):
    """Calls children in order: the outputs of one child become the inputs of the next."""

    type: Literal["Sequence"] = "Sequence"
    children: list[str] = Field(min_length=1, max_length=MAX_CHILDREN)
    mappings: list[dict[str, str]] | None = Field(
        default=None,
        description="One per hop: mappings[i] maps output names of children[i] to input names of "
        "children[i+1]; only the mapped outputs are passed on. {} passes every output unchanged.",
    )

    @model_validator(mode="after")
    def _hops(self) -> Self:
        hops = len(self.children) - 1
        if self.mappings is not None and len(self.mappings) != hops:
            raise ValueError(
                f"mappings: needs one entry per hop ({hops} for {len(self.children)} children), "
                f"got {len(self.mappings)}"
            )
        return self

    def references(self) -> list[tuple[str, str]]:
        return [(f"children.{i}", child) for i, child in enumerate(self.children)]


class Combiner(CamelSpec):
    """How an ensemble merges its children's output tensors, element by element."""

    type: CombinerType = Field(
        default=CombinerType.MEAN,
        description="mean, weightedMean, vote (majority, ties to the lowest label), max, min, sum, "
        "linear (sum of weight * output + bias) or stack (a Model node fed with the children's outputs).",
    )
    weights: list[float] | None = Field(
        default=None, max_length=MAX_CHILDREN, description="weightedMean, linear: one weight per child."
    )
    bias: float = Field(default=0.0, description="linear: added to the weighted sum.")
    output: str | None = Field(
        default=None,
        description="Combine only this output of every child (default: every output name the children share).",
    )
    node: str | None = Field(
        default=None, description="stack: the Model node that makes the final prediction."
    )
    input: str = Field(
        default="input",
        min_length=1,
        description="stack: input name of that node (children's outputs, per row).",
    )

    @model_validator(mode="after")
    def _fields(self) -> Self:
        weighted = self.type in (CombinerType.WEIGHTED_MEAN, CombinerType.LINEAR)
        if weighted and self.weights is None:
            raise ValueError(f"weights: combiner {self.type.value} needs weights")
        if not weighted and self.weights is not None:
            raise ValueError(f"weights: only weightedMean and linear take weights, not {self.type.value}")
        if self.weights is not None and not all(math.isfinite(w) for w in self.weights):
            raise ValueError("weights: must be finite")
        if (
            self.type == CombinerType.WEIGHTED_MEAN
            and self.weights is not None
            and (any(w < 0 for w in self.weights) or not sum(self.weights) > 0)
        ):
            raise ValueError("weights: weightedMean needs non-negative weights with a positive sum")
        if self.bias != 0.0 and self.type != CombinerType.LINEAR:
            raise ValueError(f"bias: only linear takes a bias, not {self.type.value}")
        if not math.isfinite(self.bias):
            raise ValueError("bias: must be finite")
        if (self.type == CombinerType.STACK) != (self.node is not None):
            raise ValueError("node: the stack combiner needs node, and only it takes one")
        return self


class EnsembleNode(_NodeBase):
    """Calls children concurrently with the same inputs and combines their outputs."""

    type: Literal["Ensemble"] = "Ensemble"
    children: list[str] = Field(min_length=1, max_length=MAX_CHILDREN)
    combiner: Combiner = Field(default_factory=Combiner)

    @model_validator(mode="after")
    def _weights(self) -> Self:
        weights = self.combiner.weights
        if weights is not None and len(weights) != len(self.children):
            raise ValueError(
                f"combiner.weights: needs one weight per child ({len(self.children)}), got {len(weights)}"
            )
        return self

    def references(self) -> list[tuple[str, str]]:
        refs = [(f"children.{i}", child) for i, child in enumerate(self.children)]
        if self.combiner.node is not None:
            refs.append(("combiner.node", self.combiner.node))
        return refs


class When(CamelSpec):
    """A test on one feature of a row: ``inputs[input][row][feature] <op> value``."""

    input: str | None = Field(default=None, description="Input tensor name (default: the first input).")
    feature: int = Field(default=0, ge=0, description="Index of the feature within a row.")
    op: CaseOp = Field(description="eq, ne, lt, le, gt or ge.")
    value: float | str = Field(description="Compared with the feature (strings: BYTES inputs).")


class Case(CamelSpec):
    when: When
    node: str = Field(description="Node that serves the rows for which the test holds.")


class SwitchNode(_NodeBase):
    """Sends each row to the node of the first case that holds, else to ``default``."""

    type: Literal["Switch"] = "Switch"
    cases: list[Case] = Field(min_length=1, max_length=MAX_CHILDREN)
    default: str | None = Field(
        default=None, description="Node for rows no case matches; without it such a request gets 400."
    )

    def references(self) -> list[tuple[str, str]]:
        refs = [(f"cases.{i}.node", case.node) for i, case in enumerate(self.cases)]
        if self.default is not None:
            refs.append(("default", self.default))
        return refs


Node = Annotated[ModelNode | SequenceNode | EnsembleNode | SwitchNode, Field(discriminator="type")]


class EventFilter(CamelSpec):
    """Send an event only when a row of the result passes this test (any row of a batch)."""

    output: str | None = Field(default=None, description="Output tensor name (default: the first output).")
    feature: int = Field(default=0, ge=0, description="Index of the feature within a row.")
    op: CaseOp
    value: float | str


class Events(CamelSpec):
    """Each graph result POSTed as a CloudEvent to a sink, off the inference path."""

    sink: str = Field(description="URL the events are POSTed to.")
    mode: Literal["structured", "binary"] = Field(
        default="structured", description="CloudEvents HTTP content mode."
    )
    type: str = Field(default="io.mlrollouts.graph.result", min_length=1, description="CloudEvent type.")
    source: str | None = Field(
        default=None, min_length=1, description="CloudEvent source (default: /mlrollouts/graphs/<route>)."
    )
    filter: EventFilter | None = None
    include_inputs: bool = Field(default=False, description="Put the request's inputs in the event data.")
    queue_size: int = Field(default=1000, ge=1, le=100_000, description="Full queue -> the event is dropped.")
    concurrency: int = Field(default=4, ge=1, le=64, description="Events in flight to the sink.")
    max_attempts: int = Field(default=5, ge=1, le=20, description="Deliveries tried before dropping.")
    initial_backoff_seconds: float = Field(default=0.1, gt=0, le=60)
    max_backoff_seconds: float = Field(default=10.0, gt=0, le=600)
    timeout_seconds: float = Field(default=5.0, gt=0, le=300, description="One delivery attempt.")
    drain_seconds: float = Field(
        default=5.0, ge=0, le=300, description="On shutdown, time to empty the queue."
    )

    @field_validator("sink")
    @classmethod
    def _sink(cls, value: str) -> str:
        return check_http_url(value, "sink")


class Graph(CamelSpec):
    """Nodes by name, the root requests enter, and limits for the whole graph."""

    root: str
    nodes: list[Node] = Field(min_length=1, max_length=MAX_NODES)
    timeout_seconds: float = Field(
        default=30.0, gt=0, le=3600, description="Time a whole request may take; exceeded -> 504."
    )
    max_concurrency: int = Field(
        default=16, ge=1, le=1024, description="Component calls in flight at once for one request."
    )
    events: Events | None = None

    @model_validator(mode="after")
    def _graph(self) -> Self:
        by_name = _unique_nodes(self.nodes)
        if self.root not in by_name:
            raise ValueError(f"root: {self.root!r} is not a node (nodes: {', '.join(by_name)})")
        for index, node in enumerate(self.nodes):
            for field, ref in node.references():
                if ref not in by_name:
                    raise ValueError(f"nodes.{index}.{field}: {ref!r} is not a node")
                if ref == node.name:
                    raise ValueError(f"nodes.{index}.{field}: node {node.name!r} refers to itself")
            _check_stack(index, node, by_name)
        _check_acyclic(by_name)
        _check_skip_placement(self.root, self.nodes)
        return self

    def node(self, name: str) -> ModelNode | SequenceNode | EnsembleNode | SwitchNode:
        for node in self.nodes:
            if node.name == name:
                return node
        raise KeyError(name)


def _unique_nodes(nodes: list[Node]) -> dict[str, Node]:
    by_name: dict[str, Node] = {}
    for index, node in enumerate(nodes):
        if node.name in by_name:
            raise ValueError(f"nodes.{index}.name: duplicate node name {node.name!r}")
        by_name[node.name] = node
    return by_name


def _check_stack(index: int, node: Node, by_name: dict[str, Node]) -> None:
    if not isinstance(node, EnsembleNode) or node.combiner.node is None:
        return
    meta = by_name[node.combiner.node]
    if not isinstance(meta, ModelNode):
        raise ValueError(
            f"nodes.{index}.combiner.node: {meta.name!r} is a {meta.type} node; stack needs a Model node"
        )


def _check_acyclic(by_name: dict[str, Node]) -> None:
    """Depth-first search; a node met again while still on the path closes a cycle."""
    done: set[str] = set()
    path: list[str] = []

    def visit(name: str) -> None:
        if name in done:
            return
        if name in path:
            cycle = " -> ".join([*path[path.index(name) :], name])
            raise ValueError(f"nodes: the graph has a cycle: {cycle}")
        path.append(name)
        for _, ref in by_name[name].references():
            visit(ref)
        path.pop()
        done.add(name)

    for name in by_name:
        visit(name)


def _check_skip_placement(root: str, nodes: list[Node]) -> None:
    """Skip means "leave me out of the combination": only an ensemble that combines children can."""
    skippable = {node.name: index for index, node in enumerate(nodes) if node.on_error == OnError.SKIP}
    if root in skippable:
        raise ValueError(f"nodes.{skippable[root]}.onError: the root {root!r} cannot be skipped")
    for parent in nodes:
        for field, ref in parent.references():
            if ref not in skippable:
                continue
            where = f"nodes.{skippable[ref]}.onError: {ref!r} is {field} of {parent.type} {parent.name!r}"
            if not isinstance(parent, EnsembleNode):
                raise ValueError(f"{where}, which cannot skip a node; use Fail or Default")
            if field == "combiner.node":
                raise ValueError(f"{where}, which cannot answer without it; use Fail or Default")
            if parent.combiner.type == CombinerType.STACK:
                raise ValueError(f"{where}: a stack needs every child's output; use Fail or Default")
