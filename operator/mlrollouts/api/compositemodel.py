"""`CompositeModel`: a graph of models (sequence, ensemble, switch) behind one endpoint."""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel

from mlrollouts.api.common import (
    ApiModel,
    Condition,
    Name,
    ObjectMeta,
    ResourceName,
    RouterConfig,
    StatusModel,
    cel,
    check_unique_names,
    unique_names_rule,
    validations,
)

KIND = "CompositeModel"
MAX_NODES = 32
MAX_CHILDREN = 16


class NodeType(StrEnum):
    MODEL = "Model"
    SEQUENCE = "Sequence"
    ENSEMBLE = "Ensemble"
    SWITCH = "Switch"


class CombinerType(StrEnum):
    MEAN = "mean"
    WEIGHTED_MEAN = "weightedMean"
    VOTE = "vote"
    MAX = "max"
    MIN = "min"
    SUM = "sum"
    LINEAR = "linear"


class Combiner(ApiModel):
    """How an ensemble merges its children's outputs; `linear` is sum(weight_i * out_i) + bias."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            cel(
                "!(self.type == 'weightedMean' || self.type == 'linear') || has(self.weights)",
                "combiners weightedMean and linear need weights",
                field="weights",
            ),
        )
    )

    type: CombinerType = CombinerType.MEAN
    """mean, weightedMean, vote, max, min, sum or linear."""
    weights: list[float] | None = Field(default=None, min_length=1, max_length=MAX_CHILDREN)
    """One weight per child (weightedMean, linear)."""
    bias: float = 0.0
    """Added to a linear combination."""

    @model_validator(mode="after")
    def _weights(self) -> Combiner:
        if self.type in (CombinerType.WEIGHTED_MEAN, CombinerType.LINEAR) and self.weights is None:
            raise ValueError(f"weights: combiner {self.type.value} needs weights")
        return self


class CaseOp(StrEnum):
    EQ = "eq"
    NE = "ne"
    LT = "lt"
    LE = "le"
    GT = "gt"
    GE = "ge"


class When(ApiModel):
    """A test on one input feature: ``inputs[input][feature] <op> value``."""

    input: str | None = Field(
        default=None, max_length=253, description="input tensor name; default: the first"
    )
    feature: int = Field(default=0, ge=0, description="index of the feature in a row")
    op: CaseOp
    """eq, ne, lt, le, gt or ge."""
    value: float
    """Compared with the feature."""


class Case(ApiModel):
    when: When
    """The test."""
    node: Name
    """Node taken when the test holds."""


class GraphNode(ApiModel):
    """A node: a model, or a Sequence / Ensemble / Switch over other nodes."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            cel(
                "self.type != 'Model' || has(self.modelDeployment)",
                "a Model node needs modelDeployment",
                field="modelDeployment",
            ),
            cel(
                "self.type == 'Model' || !has(self.modelDeployment)",
                "only a Model node takes modelDeployment",
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
        )
    )

    name: Name
    """Name of the node; unique."""
    type: NodeType
    """Model, Sequence (children in order), Ensemble (children combined) or Switch (cases)."""
    model_deployment: ResourceName | None = None
    """The ModelDeployment a Model node calls."""
    children: list[Name] = Field(default_factory=list, max_length=MAX_CHILDREN)
    """Nodes a Sequence or Ensemble calls."""
    combiner: Combiner | None = Field(default=None, description="Ensemble: default mean")
    cases: list[Case] = Field(default_factory=list, max_length=MAX_CHILDREN)
    """Switch: tests in order; the first that holds picks the node."""
    default: Name | None = Field(default=None, description="Switch: node taken when no case matches")

    @model_validator(mode="after")
    def _shape(self) -> GraphNode:
        where = f"(node {self.name!r})"
        if self.type == NodeType.MODEL and self.model_deployment is None:
            raise ValueError(f"modelDeployment: a Model node needs modelDeployment {where}")
        if self.type != NodeType.MODEL and self.model_deployment is not None:
            raise ValueError(f"modelDeployment: only a Model node takes modelDeployment {where}")
        if self.type in (NodeType.SEQUENCE, NodeType.ENSEMBLE) and not self.children:
            raise ValueError(f"children: Sequence and Ensemble nodes need children {where}")
        if self.type not in (NodeType.SEQUENCE, NodeType.ENSEMBLE) and self.children:
            raise ValueError(f"children: only Sequence and Ensemble nodes take children {where}")
        if self.type != NodeType.SWITCH and (self.cases or self.default is not None):
            raise ValueError(f"cases: cases and default belong to a Switch node {where}")
        if self.type != NodeType.ENSEMBLE and self.combiner is not None:
            raise ValueError(f"combiner: combiner belongs to an Ensemble node {where}")
        if self.type == NodeType.SWITCH and not self.cases:
            raise ValueError(f"cases: a Switch node needs cases {where}")
        if (
            self.type == NodeType.ENSEMBLE
            and self.combiner is not None
            and self.combiner.weights is not None
            and len(self.combiner.weights) != len(self.children)
        ):
            raise ValueError(
                f"combiner.weights: needs one weight per child "
                f"({len(self.combiner.weights)} weights, {len(self.children)} children) {where}"
            )
        return self

    def references(self) -> list[str]:
        """Names of the nodes this node points to."""
        refs = list(self.children) + [case.node for case in self.cases]
        if self.default is not None:
            refs.append(self.default)
        return refs


class CompositeTraffic(ApiModel):
    provider: Literal["Router"] = "Router"
    """Graphs run in the router."""
    router: RouterConfig = Field(default_factory=RouterConfig)
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
        )
    )

    nodes: list[GraphNode] = Field(
        min_length=1, max_length=MAX_NODES, json_schema_extra=validations(unique_names_rule("node"))
    )
    """The nodes of the graph."""
    root: Name
    """The node requests enter."""
    traffic: CompositeTraffic = Field(default_factory=CompositeTraffic)
    """The router that serves the graph."""

    @model_validator(mode="after")
    def _graph(self) -> CompositeModelSpec:
        check_unique_names(self.nodes, "nodes")
        by_name = {node.name: node for node in self.nodes}
        if self.root not in by_name:
            raise ValueError(f"root: {self.root!r} is not a node (nodes: {', '.join(by_name)})")
        for index, node in enumerate(self.nodes):
            for field, refs in (
                ("children", node.children),
                ("cases", [case.node for case in node.cases]),
                ("default", [node.default] if node.default is not None else []),
            ):
                for ref in refs:
                    if ref not in by_name:
                        raise ValueError(f"nodes[{index}].{field}: {ref!r} is not a node")
        # the graph must be acyclic: depth-first search from every node
        state: dict[str, int] = {}

        def visit(name: str, path: list[str]) -> None:
            if state.get(name) == 2:
                return
            if state.get(name) == 1:
                cycle = " -> ".join([*path[path.index(name) :], name])
                raise ValueError(f"nodes: the graph has a cycle: {cycle}")
            state[name] = 1
            for ref in by_name[name].references():
                visit(ref, [*path, name])
            state[name] = 2

        for name in by_name:
            visit(name, [])
        return self


# --- status ---------------------------------------------------------------------------------------


class CompositePhase(StrEnum):
    PENDING = "Pending"
    READY = "Ready"
    DEGRADED = "Degraded"


class NodeStatus(StatusModel):
    name: str
    ready: bool = False
    endpoint: str | None = None
    message: str | None = None


class CompositeModelStatus(StatusModel):
    phase: CompositePhase = CompositePhase.PENDING
    observed_generation: int | None = None
    endpoint: str | None = Field(default=None, description="URL of the graph's inference endpoint")
    nodes: list[NodeStatus] = Field(default_factory=list)
    conditions: list[Condition] = Field(default_factory=list)
    message: str | None = None


class CompositeModel(BaseModel):
    """Several models behind one endpoint, combined as a graph."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")

    api_version: Literal["mlrollouts.io/v1alpha1"] = "mlrollouts.io/v1alpha1"
    kind: Literal["CompositeModel"] = "CompositeModel"
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    spec: CompositeModelSpec
    status: CompositeModelStatus | None = None
