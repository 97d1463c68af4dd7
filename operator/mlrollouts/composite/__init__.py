"""Composite models (pure): the components a graph calls and their readiness, the graph the router
runs (translated from the CompositeModel spec, checked by the data plane's own graph model), and
the decision of one pass (status, events, when to look again)."""

from mlrollouts.composite.components import (
    Component,
    ComponentRef,
    NodeRef,
    node_refs,
    read_component,
    traffic_split,
)
from mlrollouts.composite.decide import (
    CompositeDecision,
    CompositeObservation,
    RouterState,
    decide,
    node_statuses,
)
from mlrollouts.composite.graph import (
    Endpoint,
    GraphSpecError,
    api_path,
    build_graph,
    composite_route_table,
    endpoints,
    graph_document,
    route_table,
)

__all__ = [
    "Component",
    "ComponentRef",
    "CompositeDecision",
    "CompositeObservation",
    "Endpoint",
    "GraphSpecError",
    "NodeRef",
    "RouterState",
    "api_path",
    "build_graph",
    "composite_route_table",
    "decide",
    "endpoints",
    "graph_document",
    "node_refs",
    "node_statuses",
    "read_component",
    "route_table",
    "traffic_split",
]
