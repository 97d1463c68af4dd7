"""Graph execution for composite models: Model, Sequence, Ensemble and Switch nodes behind one route.

- ``model``: the graph spec (pydantic), the ``graph`` of a route in the route table;
- ``executor``: ``compile_graph`` and ``run_graph`` (plain dicts and lists on the request path);
- ``combiners``, ``tensors``: element-wise combination and row handling of V2 JSON tensors;
- ``request``: the checks of a graph's V2 request (400 naming the field);
- ``calls``: the component calls (inference POST, metadata GET) over the router's pooled client;
- ``events``: CloudEvent delivery of graph results from a bounded queue;
- ``runtime``: the graphs of a route table, with their event publishers, for the router app;
- ``metadata``: the graph's V2 metadata and readiness, derived from its components';
- ``v1``: KServe V1 requests and predictions in front of a graph;
- ``endpoint``: what the router answers on a graph route's paths;
- ``metrics``: the ``mlgraph_*`` Prometheus metrics.

Only the spec is imported here: the operator imports the route table (and so this package) without
the serving dependencies the executor needs.
"""

from mlserving.router.graph.model import (
    Case,
    CaseOp,
    Combiner,
    CombinerType,
    DefaultOutput,
    EnsembleNode,
    EventFilter,
    Events,
    Graph,
    ModelNode,
    Node,
    NodeType,
    OnError,
    SequenceNode,
    SwitchNode,
    When,
)

__all__ = [
    "Case",
    "CaseOp",
    "Combiner",
    "CombinerType",
    "DefaultOutput",
    "EnsembleNode",
    "EventFilter",
    "Events",
    "Graph",
    "ModelNode",
    "Node",
    "NodeType",
    "OnError",
    "SequenceNode",
    "SwitchNode",
    "When",
]
