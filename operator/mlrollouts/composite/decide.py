"""One pass of a CompositeModel, decided (pure): spec + previous status + what was observed + now
-> the status, the events and when to look again.

- phase ``Degraded`` when a node names a component that does not exist or that a graph cannot call
  (the message names the node and the field); ``Ready`` when every node is ready and the router
  answers; ``Pending`` otherwise;
- a Model node is ready when its component is (:mod:`mlrollouts.composite.components`); a Sequence,
  Ensemble or Switch when every node it calls is;
- events mark changes only: a node turning ready or not, a component missing or rolled back, a new
  graph applied, the composite turning Ready.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from mlrollouts.api.compositemodel import (
    CompositeModel,
    CompositeModelStatus,
    CompositePhase,
    GraphNode,
    NodeStatus,
    NodeType,
)
from mlrollouts.composite.components import (
    MISSING,
    NOT_READY,
    PROBLEMS,
    ROLLED_BACK,
    UNREACHABLE,
    Component,
    node_refs,
)
from mlrollouts.core.conditions import DEGRADED, READY, ConditionStatus, set_condition
from mlrollouts.core.events import Event

READY_RECHECK_SECONDS = 10.0
"""How often a Ready composite looks at its components again (a canary or a rollback there shows
in the node's message)."""

NODES_READY = "NodesReady"
NODES_NOT_READY = "NodesNotReady"


@dataclass(frozen=True)
class RouterState:
    """The composite's own router Deployment."""

    ready_replicas: int = 0
    replicas: int = 0

    @property
    def ready(self) -> bool:
        return self.ready_replicas > 0


@dataclass(frozen=True)
class CompositeObservation:
    components: Mapping[str, Component]
    """Each Model node's component, by node name."""
    endpoints: Mapping[str, str]
    """Each Model node's inference URL, by node name."""
    router: RouterState
    endpoint: str
    """The graph's own inference URL."""
    graph_changed: bool = False
    """The route table the router reads was missing or different and is written by this pass."""


@dataclass
class CompositeDecision:
    status: CompositeModelStatus
    events: list[Event] = field(default_factory=list)
    requeue_after: float | None = None


def decide(
    composite: CompositeModel, seen: CompositeObservation, now: datetime, poll: float
) -> CompositeDecision:
    """The status and events of one pass; ``poll`` is how soon to look again while not Ready."""
    old = composite.status or CompositeModelStatus()
    nodes = node_statuses(composite, seen)
    phase, reason, message = _phase(composite, nodes, seen)
    generation = composite.metadata.generation
    conditions = set_condition(
        old.conditions,
        READY,
        ConditionStatus.TRUE if phase is CompositePhase.READY else ConditionStatus.FALSE,
        reason,
        message,
        now=now,
        generation=generation,
    )
    degraded = phase is CompositePhase.DEGRADED
    conditions = set_condition(
        conditions,
        DEGRADED,
        ConditionStatus.TRUE if degraded else ConditionStatus.FALSE,
        reason if degraded else "AsExpected",
        message if degraded else "",
        now=now,
        generation=generation,
    )
    status = CompositeModelStatus(
        phase=phase,
        observed_generation=generation,
        endpoint=seen.endpoint,
        nodes=nodes,
        conditions=conditions,
        message=message,
    )
    events = _events(composite, old, status, seen)
    requeue = READY_RECHECK_SECONDS if phase is CompositePhase.READY else poll
    return CompositeDecision(status, events, requeue)


def node_statuses(composite: CompositeModel, seen: CompositeObservation) -> list[NodeStatus]:
    """Every node's readiness, in the order of the spec."""
    by_name = {node.name: node for node in composite.spec.nodes}
    refs = node_refs(composite.spec)
    done: dict[str, NodeStatus] = {}

    def status_of(name: str) -> NodeStatus:
        if name not in done:
            node = by_name[name]
            if node.type is NodeType.MODEL:
                component = str(refs[name].component) if name in refs else None
                done[name] = _model_node(node, component, seen.components.get(name), seen.endpoints.get(name))
            else:
                done[name] = _inner_node(node, [status_of(ref) for ref in dict.fromkeys(node.references())])
        return done[name]

    return [status_of(node.name) for node in composite.spec.nodes]


def _model_node(node: GraphNode, ref: str | None, seen: Component | None, endpoint: str | None) -> NodeStatus:
    if seen is None:  # a component that was not observed is not known to be ready
        return NodeStatus(name=node.name, ready=False, reason=NOT_READY, component=ref, endpoint=endpoint)
    return NodeStatus(
        name=node.name,
        ready=seen.ready,
        reason=seen.reason,
        component=ref,
        endpoint=endpoint,
        message=seen.message,
    )


def _inner_node(node: GraphNode, called: list[NodeStatus]) -> NodeStatus:
    waiting = [s.name for s in called if not s.ready]
    if not waiting:
        return NodeStatus(name=node.name, ready=True, reason=NODES_READY)
    return NodeStatus(
        name=node.name, ready=False, reason=NODES_NOT_READY, message=f"waiting for {', '.join(waiting)}"
    )


def _phase(
    composite: CompositeModel, nodes: list[NodeStatus], seen: CompositeObservation
) -> tuple[CompositePhase, str, str]:
    refs = node_refs(composite.spec)
    problems = [n for n in nodes if n.reason in PROBLEMS]
    if problems:
        reason = MISSING if any(n.reason == MISSING for n in problems) else UNREACHABLE
        text = "; ".join(f"node {n.name!r} ({refs[n.name].location}): {n.message}" for n in problems)
        return CompositePhase.DEGRADED, reason, text
    waiting = [n.name for n in nodes if not n.ready and n.reason != NODES_NOT_READY]
    if waiting:
        return CompositePhase.PENDING, "ComponentsNotReady", f"waiting for nodes {', '.join(waiting)}"
    if not seen.router.ready:
        message = (
            f"waiting for the router ({seen.router.ready_replicas}/{seen.router.replicas} replicas ready)"
        )
        return CompositePhase.PENDING, "RouterNotReady", message
    return CompositePhase.READY, "GraphReady", f"{len(nodes)} nodes ready; serving {seen.endpoint}"


def _events(
    composite: CompositeModel,
    old: CompositeModelStatus,
    new: CompositeModelStatus,
    seen: CompositeObservation,
) -> list[Event]:
    events = []
    if seen.graph_changed:
        spec = composite.spec
        events.append(
            Event.normal("GraphApplied", f"route table written: {len(spec.nodes)} nodes, root {spec.root!r}")
        )
    before = {n.name: n for n in old.nodes}
    for node in new.nodes:
        if node.component is not None:
            events += _node_events(before.get(node.name), node)
    if new.phase is CompositePhase.READY and old.phase is not CompositePhase.READY:
        events.append(Event.normal("GraphReady", new.message or "every node is ready"))
    return events


def _node_events(before: NodeStatus | None, now: NodeStatus) -> list[Event]:
    """What changed for one Model node since the last status."""
    text = f"node {now.name!r}: {now.message}"
    was_ready = before is not None and before.ready
    events = []
    if now.reason in PROBLEMS and (before is None or before.reason != now.reason):
        events.append(Event.warning(now.reason or MISSING, text))
    elif now.ready and not was_ready:
        events.append(Event.normal("NodeReady", text))
    elif not now.ready and was_ready:
        events.append(Event.warning("NodeNotReady", text))
    if now.reason == ROLLED_BACK and (before is None or before.message != now.message):
        events.append(Event.warning(ROLLED_BACK, text))
    return events
