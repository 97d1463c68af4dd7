"""`CompositeModel`: a graph of models (sequence, ensemble, switch) behind one endpoint.

The operator translates this spec into the graph the router runs
(:class:`mlserving.router.graph.model.Graph`); the fields mean exactly what they mean there, with
durations written as duration strings (``300ms``) instead of seconds. Each ``Model`` node calls the
entry point of a ModelDeployment or an Experiment, so a component keeps its own rollout or test.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Literal

from pydantic import ConfigDict, Field, WithJsonSchema, model_validator

from mlrollouts.api.common import (
    MAX_FEATURE_INDEX,
    ApiModel,
    CustomResource,
    Duration,
    Name,
    ResourceName,
    StatusModel,
    cel,
    check_unique_names,
    unique_names_rule,
    validations,
)
from mlrollouts.core.conditions import Condition
from mlrollouts.core.durations import parse_duration

MAX_NODES = 32
MAX_CHILDREN = 16
MAX_OUTPUTS = 16
URL_PATTERN = r"^https?://[^/\s?#]+(/[^\s?#]*)?$"
"""An http(s) URL without query or fragment, as the router accepts it."""

# A number or a string (or, for default outputs, a list of them): the CRD cannot type a union, so
# the API server keeps the value as written and the operator checks it.
Scalar = bool | int | float | str
NumberOrString = Annotated[
    float | str,
    WithJsonSchema(
        {
            "x-kubernetes-preserve-unknown-fields": True,
            **validations(
                cel(
                    "type(self) == string || type(self) == double || type(self) == int",
                    "must be a number or a string",
                )
            ),
        }
    ),
]
# Only the top level is typed here: a rule that walked an untyped list would have no cost bound.
DefaultValue = Annotated[
    Scalar | list[Scalar],
    WithJsonSchema(
        {
            "x-kubernetes-preserve-unknown-fields": True,
            **validations(
                cel("type(self) != map", "must be a number, a string, a boolean or a list of them")
            ),
        }
    ),
]
Text = Annotated[str, Field(min_length=1, max_length=253)]


def _within(what: str, value: str | None, low: str, high: str, *, allow_zero: bool = False) -> None:
    """A duration within (low, high], or [low, high] with ``allow_zero``."""
    if value is None:
        return
    seconds = parse_duration(value)
    above = seconds >= parse_duration(low) if allow_zero else seconds > parse_duration(low)
    if not above or seconds > parse_duration(high):
        bound = "at least" if allow_zero else "longer than"
        raise ValueError(f"{what}: must be {bound} {low} and at most {high}, got {value}")


def _duration_rule(
    field: str, low: str, high: str, *, optional: bool, allow_zero: bool = False
) -> dict[str, str]:
    above = ">=" if allow_zero else ">"
    test = f"duration(self.{field}) {above} duration('{low}') && duration(self.{field}) <= duration('{high}')"
    bound = "at least" if allow_zero else "longer than"
    rule = f"!has(self.{field}) || ({test})" if optional else test
    return cel(rule, f"must be {bound} {low} and at most {high}", field=field)


class NodeType(StrEnum):
    MODEL = "Model"
    SEQUENCE = "Sequence"
    ENSEMBLE = "Ensemble"
    SWITCH = "Switch"


class OnError(StrEnum):
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


class Datatype(StrEnum):
    BOOL = "BOOL"
    UINT8 = "UINT8"
    UINT16 = "UINT16"
    UINT32 = "UINT32"
    UINT64 = "UINT64"
    INT8 = "INT8"
    INT16 = "INT16"
    INT32 = "INT32"
    INT64 = "INT64"
    FP16 = "FP16"
    FP32 = "FP32"
    FP64 = "FP64"
    BYTES = "BYTES"


_WEIGHTED = (CombinerType.WEIGHTED_MEAN, CombinerType.LINEAR)


class Combiner(ApiModel):
    """How an ensemble merges its children's outputs, element by element."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            cel(
                "!(self.type == 'weightedMean' || self.type == 'linear') || has(self.weights)",
                "combiners weightedMean and linear need weights",
                field="weights",
            ),
            cel(
                "!has(self.weights) || self.type == 'weightedMean' || self.type == 'linear'",
                "only weightedMean and linear take weights",
                field="weights",
            ),
            cel(
                "self.type != 'weightedMean' || !has(self.weights) "
                "|| (self.weights.all(w, double(w) >= 0.0) && self.weights.exists(w, double(w) > 0.0))",
                "weightedMean needs non-negative weights with a positive sum",
                field="weights",
            ),
            cel(
                "!has(self.bias) || double(self.bias) == 0.0 || self.type == 'linear'",
                "only linear takes a bias",
                field="bias",
            ),
            cel(
                "(self.type == 'stack') == has(self.node)",
                "the stack combiner needs node, and only it takes one",
                field="node",
            ),
            cel(
                "!has(self.input) || self.type == 'stack'",
                "only the stack combiner takes input",
                field="input",
            ),
        )
    )

    type: CombinerType = CombinerType.MEAN
    """mean, weightedMean, vote (majority, ties to the lowest label), max, min, sum, linear (sum of weight * output + bias) or stack (a Model node fed with the children's outputs)."""
    weights: list[float] | None = Field(default=None, min_length=1, max_length=MAX_CHILDREN)
    """weightedMean, linear: one weight per child (weightedMean: non-negative)."""
    bias: float = 0.0
    """linear: added to the weighted sum."""
    output: Text | None = None
    """Combine only this output of every child (default: every output name the children share)."""
    node: Name | None = None
    """stack: the Model node that makes the final prediction from the children's outputs."""
    input: Text | None = None
    """stack: the input name of that node (default: input); it gets every child's outputs side by side."""

    @model_validator(mode="after")
    def _fields(self) -> Combiner:
        weighted = self.type in _WEIGHTED
        if weighted and self.weights is None:
            raise ValueError(f"weights: combiner {self.type.value} needs weights")
        if not weighted and self.weights is not None:
            raise ValueError(f"weights: only weightedMean and linear take weights, not {self.type.value}")
        if (
            self.type == CombinerType.WEIGHTED_MEAN
            and self.weights is not None
            and (any(w < 0 for w in self.weights) or not sum(self.weights) > 0)
        ):
            raise ValueError("weights: weightedMean needs non-negative weights with a positive sum")
        if self.bias != 0.0 and self.type != CombinerType.LINEAR:
            raise ValueError(f"bias: only linear takes a bias, not {self.type.value}")
        if (self.type == CombinerType.STACK) != (self.node is not None):
            raise ValueError("node: the stack combiner needs node, and only it takes one")
        if self.input is not None and self.type != CombinerType.STACK:
            raise ValueError(f"input: only the stack combiner takes input, not {self.type.value}")
        return self


class CaseOp(StrEnum):
    EQ = "eq"
    NE = "ne"
    LT = "lt"
    LE = "le"
    GT = "gt"
    GE = "ge"


class When(ApiModel):
    """A test on one feature of a row: ``inputs[input][row][feature] <op> value``."""

    input: str | None = Field(
        default=None, max_length=253, description="input tensor name; default: the first"
    )
    feature: int = Field(default=0, ge=0, le=MAX_FEATURE_INDEX, description="index of the feature in a row")
    op: CaseOp
    """eq, ne, lt, le, gt or ge."""
    value: NumberOrString = Field(
        description="compared with the feature: a number, or a string for BYTES inputs"
    )


class Case(ApiModel):
    when: When
    """The test."""
    node: Name
    """Node that serves the rows for which the test holds."""


class DefaultOutput(ApiModel):
    """One output tensor a node answers with when it fails under ``onError: Default``."""

    name: Text
    """Output tensor name."""
    datatype: Datatype = Datatype.FP64
    """Open Inference Protocol datatype, e.g. FP64, INT64, BYTES."""
    value: DefaultValue = Field(
        description="the value of one row: a scalar (shape [N]) or a list (shape [N, len]), repeated per row"
    )


_REFERENCE_FIELDS = ("modelDeployment", "experiment")


class GraphNode(ApiModel):
    """A node: a model, or a Sequence / Ensemble / Switch over other nodes."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            cel(
                "self.type != 'Model' || has(self.modelDeployment) || has(self.experiment)",
                "a Model node needs modelDeployment or experiment",
                field="modelDeployment",
            ),
            cel(
                "!(has(self.modelDeployment) && has(self.experiment))",
                "a node takes modelDeployment or experiment, not both",
                field="experiment",
            ),
            cel(
                "self.type == 'Model' || (!has(self.modelDeployment) && !has(self.experiment))",
                "only a Model node takes modelDeployment or experiment",
                field="modelDeployment",
            ),
            cel(
                "!(self.type == 'Sequence' || self.type == 'Ensemble') || (has(self.children) && size(self.children) > 0)",
                "Sequence and Ensemble nodes need children",
                field="children",
            ),
            cel(
                "self.type != 'Switch' || (has(self.cases) && size(self.cases) > 0)",
                "a Switch node needs cases",
                field="cases",
            ),
            cel(
                "self.type == 'Sequence' || self.type == 'Ensemble' || !has(self.children) || size(self.children) == 0",
                "only Sequence and Ensemble nodes take children",
                field="children",
            ),
            cel(
                "self.type == 'Switch' || ((!has(self.cases) || size(self.cases) == 0) && !has(self.default))",
                "cases and default belong to a Switch node",
                field="cases",
            ),
            cel(
                "self.type == 'Ensemble' || !has(self.combiner)",
                "combiner belongs to an Ensemble node",
                field="combiner",
            ),
            cel(
                "self.type != 'Ensemble' || !has(self.combiner) || !has(self.combiner.weights) "
                "|| (has(self.children) && size(self.combiner.weights) == size(self.children))",
                "combiner.weights needs one weight per child",
                field="combiner.weights",
            ),
            cel(
                "!has(self.mappings) || self.type == 'Sequence'",
                "mappings belong to a Sequence node",
                field="mappings",
            ),
            cel(
                "self.type != 'Sequence' || !has(self.mappings) "
                "|| (has(self.children) && size(self.mappings) == size(self.children) - 1)",
                "mappings needs one entry per hop (one less than children)",
                field="mappings",
            ),
            cel(
                "!has(self.onError) || self.onError != 'Default' || has(self.defaultOutputs)",
                "onError Default needs defaultOutputs",
                field="defaultOutputs",
            ),
            cel(
                "!has(self.defaultOutputs) || (has(self.onError) && self.onError == 'Default')",
                "only onError Default takes defaultOutputs",
                field="defaultOutputs",
            ),
            cel(
                "!has(self.defaultOutputs) || self.defaultOutputs.all(x, self.defaultOutputs.exists_one(y, y.name == x.name))",
                "defaultOutputs names must be unique",
                field="defaultOutputs",
            ),
            _duration_rule("timeout", "0s", "1h", optional=True),
        )
    )

    name: Name
    """Name of the node; unique. The `node` label of the mlgraph_node_* metrics."""
    type: NodeType
    """Model, Sequence (children in order), Ensemble (children combined) or Switch (cases)."""
    model_deployment: ResourceName | None = None
    """Model node: the ModelDeployment it calls (its entry point, so its own rollout applies)."""
    experiment: ResourceName | None = None
    """Model node: the Experiment it calls (its router, so its own A/B test or bandit applies)."""
    children: list[Name] = Field(default_factory=list, max_length=MAX_CHILDREN)
    """Nodes a Sequence or Ensemble calls."""
    mappings: list[dict[str, Annotated[str, Field(max_length=253)]]] | None = Field(
        default=None,
        max_length=MAX_CHILDREN,
        description="Sequence: one per hop; mappings[i] maps output names of children[i] to input names "
        "of children[i+1] and passes only those outputs ({} passes every output unchanged)",
    )
    combiner: Combiner | None = Field(default=None, description="Ensemble: default mean")
    cases: list[Case] = Field(default_factory=list, max_length=MAX_CHILDREN)
    """Switch: tests in order; the first that holds picks the node."""
    default: Name | None = Field(
        default=None, description="Switch: node taken when no case matches (without it such rows get 400)"
    )
    timeout: Duration | None = None
    """Time the node may take, its children included; exceeded -> the node fails (504)."""
    on_error: OnError = OnError.FAIL
    """Fail: the failure goes to the parent. Skip: an ensemble that combines leaves this child out. Default: the node answers defaultOutputs."""
    default_outputs: list[DefaultOutput] | None = Field(default=None, min_length=1, max_length=MAX_OUTPUTS)
    """onError Default: the outputs the node answers with when it fails."""

    @model_validator(mode="after")
    def _shape(self) -> GraphNode:
        problems = _shape_problems(self)
        if problems:
            raise ValueError(f"{problems[0]} (node {self.name!r})")
        _within("timeout", self.timeout, "0s", "1h")
        return self

    @property
    def component_field(self) -> str | None:
        """``modelDeployment`` or ``experiment``: the field that names the node's component."""
        if self.model_deployment is not None:
            return "modelDeployment"
        if self.experiment is not None:
            return "experiment"
        return None

    @property
    def component(self) -> str | None:
        """The name of the ModelDeployment or Experiment a Model node calls."""
        return self.model_deployment or self.experiment

    def references(self) -> list[str]:
        """Names of the nodes this node points to."""
        refs = list(self.children) + [case.node for case in self.cases]
        if self.default is not None:
            refs.append(self.default)
        if self.combiner is not None and self.combiner.node is not None:
            refs.append(self.combiner.node)
        return refs


def _shape_problems(node: GraphNode) -> list[str]:
    """What the node's type does not allow, each starting with the field."""
    kind = node.type
    problems = []
    if kind == NodeType.MODEL and node.component is None:
        problems.append("modelDeployment: a Model node needs modelDeployment or experiment")
    if node.model_deployment is not None and node.experiment is not None:
        problems.append("experiment: a node takes modelDeployment or experiment, not both")
    if kind != NodeType.MODEL and node.component is not None:
        problems.append(f"{node.component_field}: only a Model node takes modelDeployment or experiment")
    if kind in (NodeType.SEQUENCE, NodeType.ENSEMBLE) and not node.children:
        problems.append("children: Sequence and Ensemble nodes need children")
    if kind not in (NodeType.SEQUENCE, NodeType.ENSEMBLE) and node.children:
        problems.append("children: only Sequence and Ensemble nodes take children")
    if kind != NodeType.SWITCH and (node.cases or node.default is not None):
        problems.append("cases: cases and default belong to a Switch node")
    if kind == NodeType.SWITCH and not node.cases:
        problems.append("cases: a Switch node needs cases")
    if kind != NodeType.ENSEMBLE and node.combiner is not None:
        problems.append("combiner: combiner belongs to an Ensemble node")
    weights = node.combiner.weights if node.combiner is not None else None
    if kind == NodeType.ENSEMBLE and weights is not None and len(weights) != len(node.children):
        problems.append(
            f"combiner.weights: needs one weight per child ({len(weights)} weights, {len(node.children)} children)"
        )
    if node.mappings is not None and kind != NodeType.SEQUENCE:
        problems.append("mappings: mappings belong to a Sequence node")
    hops = len(node.children) - 1
    if kind == NodeType.SEQUENCE and node.mappings is not None and len(node.mappings) != hops:
        problems.append(f"mappings: needs one entry per hop ({hops} for {len(node.children)} children)")
    return problems + _on_error_problems(node)


def _on_error_problems(node: GraphNode) -> list[str]:
    if node.on_error == OnError.DEFAULT and node.default_outputs is None:
        return ["defaultOutputs: onError Default needs defaultOutputs"]
    if node.on_error != OnError.DEFAULT and node.default_outputs is not None:
        return ["defaultOutputs: only onError Default takes defaultOutputs"]
    names = [output.name for output in node.default_outputs or []]
    if len(set(names)) != len(names):
        return [f"defaultOutputs: defaultOutputs names must be unique ({', '.join(names)})"]
    return []


class EventMode(StrEnum):
    STRUCTURED = "structured"
    BINARY = "binary"


class EventFilter(ApiModel):
    """Send an event only when a row of the result passes this test (any row of a batch)."""

    output: str | None = Field(
        default=None, max_length=253, description="output tensor name; default: the first"
    )
    feature: int = Field(default=0, ge=0, le=MAX_FEATURE_INDEX, description="index of the feature in a row")
    op: CaseOp
    """eq, ne, lt, le, gt or ge."""
    value: NumberOrString = Field(
        description="compared with the feature: a number, or a string for BYTES outputs"
    )


class GraphEvents(ApiModel):
    """Each graph result POSTed as a CloudEvent to a sink, off the inference path: a bounded queue,
    retries with back-off, and a full queue drops the event (counted in mlgraph_events_total)."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            _duration_rule("initialBackoff", "0s", "1m", optional=False),
            _duration_rule("maxBackoff", "0s", "10m", optional=False),
            _duration_rule("timeout", "0s", "5m", optional=False),
            _duration_rule("drain", "0s", "5m", optional=False, allow_zero=True),
        )
    )

    sink: str = Field(max_length=2048, pattern=URL_PATTERN)
    """URL the events are POSTed to (http or https, no query)."""
    mode: EventMode = EventMode.STRUCTURED
    """CloudEvents HTTP content mode: structured (the event as JSON) or binary (ce-* headers)."""
    type: Text = "io.mlrollouts.graph.result"
    """CloudEvent type."""
    source: Text | None = None
    """CloudEvent source; default: /mlrollouts/graphs/<name>."""
    filter: EventFilter | None = None
    """Send only the results that pass this test; default: every successful result."""
    include_inputs: bool = False
    """Put the request's inputs in the event data too."""
    queue_size: int = Field(default=1000, ge=1, le=100_000)
    """Events waiting per router replica; when full, a new event is dropped."""
    concurrency: int = Field(default=4, ge=1, le=64)
    """Deliveries in flight to the sink per router replica."""
    max_attempts: int = Field(default=5, ge=1, le=20)
    """Deliveries tried (answers 408, 425, 429, 5xx and connection failures are retried) before dropping."""
    initial_backoff: Duration = "100ms"
    """Wait before the first retry; doubled (with jitter) after each."""
    max_backoff: Duration = "10s"
    """Longest wait between retries."""
    timeout: Duration = "5s"
    """Time one delivery attempt may take."""
    drain: Duration = "5s"
    """On shutdown, time the queue gets to empty."""

    @model_validator(mode="after")
    def _durations(self) -> GraphEvents:
        _within("initialBackoff", self.initial_backoff, "0s", "1m")
        _within("maxBackoff", self.max_backoff, "0s", "10m")
        _within("timeout", self.timeout, "0s", "5m")
        _within("drain", self.drain, "0s", "5m", allow_zero=True)
        return self


class CompositeRouter(ApiModel):
    """The mlserving router that runs the graph (stickiness is set on the components)."""

    replicas: int = Field(default=1, ge=1, le=100)
    """Router replicas."""
    image: str | None = Field(default=None, max_length=1024, description="default: the serving image")


class CompositeTraffic(ApiModel):
    provider: Literal["Router"] = "Router"
    """Graphs run in the router."""
    router: CompositeRouter = Field(default_factory=CompositeRouter)
    """The router that runs the graph."""


_NODE_EXISTS = "self.nodes.exists(m, m.name == {ref})"


class CompositeModelSpec(ApiModel):
    model_config = ConfigDict(
        json_schema_extra=validations(
            cel(
                _NODE_EXISTS.format(ref="self.root"),
                "root must name a node",
                field="root",
            ),
            cel(
                "self.nodes.all(n, !has(n.children) || n.children.all(c, "
                + _NODE_EXISTS.format(ref="c")
                + "))",
                "children must name nodes",
                field="nodes",
            ),
            cel(
                "self.nodes.all(n, !has(n.cases) || n.cases.all(c, "
                + _NODE_EXISTS.format(ref="c.node")
                + "))",
                "cases must name nodes",
                field="nodes",
            ),
            cel(
                "self.nodes.all(n, !has(n.default) || " + _NODE_EXISTS.format(ref="n.default") + ")",
                "default must name a node",
                field="nodes",
            ),
            cel(
                "self.nodes.all(n, !has(n.combiner) || !has(n.combiner.node) "
                "|| self.nodes.exists(m, m.name == n.combiner.node && m.type == 'Model'))",
                "a stack combiner's node must name a Model node",
                field="nodes",
            ),
            cel(
                "self.nodes.all(n, n.name != self.root || !has(n.onError) || n.onError != 'Skip')",
                "the root node cannot have onError Skip",
                field="root",
            ),
            _duration_rule("timeout", "0s", "1h", optional=False),
        )
    )

    nodes: list[GraphNode] = Field(
        min_length=1, max_length=MAX_NODES, json_schema_extra=validations(unique_names_rule("node"))
    )
    """The nodes of the graph."""
    root: Name
    """The node requests enter."""
    timeout: Duration = "30s"
    """Time a whole request may take; exceeded -> 504 naming the components still called."""
    max_concurrency: int = Field(default=16, ge=1, le=1024)
    """Component calls in flight at once for one request (bounds an ensemble's fan-out)."""
    events: GraphEvents | None = None
    """Deliver graph results as CloudEvents to a sink (optional)."""
    traffic: CompositeTraffic = Field(default_factory=CompositeTraffic)
    """The router that serves the graph."""

    @model_validator(mode="after")
    def _graph(self) -> CompositeModelSpec:
        check_unique_names(self.nodes, "nodes")
        by_name = {node.name: node for node in self.nodes}
        if self.root not in by_name:
            raise ValueError(f"root: {self.root!r} is not a node (nodes: {', '.join(by_name)})")
        if by_name[self.root].on_error == OnError.SKIP:
            raise ValueError(f"root: the root node {self.root!r} cannot have onError Skip")
        for index, node in enumerate(self.nodes):
            _check_references(index, node, by_name)
        _check_acyclic(by_name)
        _within("timeout", self.timeout, "0s", "1h")
        return self


def _check_references(index: int, node: GraphNode, by_name: dict[str, GraphNode]) -> None:
    stack = node.combiner.node if node.combiner is not None else None
    for field, refs in (
        ("children", node.children),
        ("cases", [case.node for case in node.cases]),
        ("default", [node.default] if node.default is not None else []),
        ("combiner.node", [stack] if stack is not None else []),
    ):
        for ref in refs:
            if ref not in by_name:
                raise ValueError(f"nodes[{index}].{field}: {ref!r} is not a node")
            if ref == node.name:
                raise ValueError(f"nodes[{index}].{field}: node {ref!r} refers to itself")
    if stack is not None and by_name[stack].type != NodeType.MODEL:
        raise ValueError(
            f"nodes[{index}].combiner.node: {stack!r} is a {by_name[stack].type.value} node; "
            "a stack combiner's node must name a Model node"
        )


def _check_acyclic(by_name: dict[str, GraphNode]) -> None:
    """Depth-first search from every node; a node met again on its own path closes a cycle."""
    done: set[str] = set()

    def visit(name: str, path: list[str]) -> None:
        if name in done:
            return
        if name in path:
            cycle = " -> ".join([*path[path.index(name) :], name])
            raise ValueError(f"nodes: the graph has a cycle: {cycle}")
        for ref in by_name[name].references():
            visit(ref, [*path, name])
        done.add(name)

    for name in by_name:
        visit(name, [])


# --- status ---------------------------------------------------------------------------------------


class CompositePhase(StrEnum):
    PENDING = "Pending"
    READY = "Ready"
    DEGRADED = "Degraded"


class NodeStatus(StatusModel):
    name: str
    ready: bool = False
    reason: str | None = Field(
        default=None, description="why the node is (not) ready, e.g. ComponentReady, ComponentMissing"
    )
    component: str | None = Field(default=None, description="the component a Model node calls: <Kind>/<name>")
    endpoint: str | None = Field(default=None, description="what a Model node calls")
    message: str | None = None


class CompositeModelStatus(StatusModel):
    phase: CompositePhase = CompositePhase.PENDING
    observed_generation: int | None = None
    endpoint: str | None = Field(default=None, description="URL of the graph's inference endpoint")
    nodes: list[NodeStatus] = Field(default_factory=list)
    conditions: list[Condition] = Field(default_factory=list)
    message: str | None = None


class CompositeModel(CustomResource[CompositeModelSpec, CompositeModelStatus]):
    """Several models behind one endpoint, combined as a graph."""

    kind: Literal["CompositeModel"] = "CompositeModel"
