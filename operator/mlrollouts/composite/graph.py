"""The graph the router runs, translated from a CompositeModel's spec (pure).

The data plane's :class:`mlserving.router.graph.model.Graph` is the reference for what a graph may
be: the translation builds it and reports each of its objections at the field of the
CompositeModel that caused it (``spec.nodes[3].onError``), so a refused spec names what to fix.

A Model node calls the entry point of its component: ``upstream`` is the component's Service as
the operator reaches it (``upstream_template``), ``model`` the name that entry point serves.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from mlrollouts.api.compositemodel import (
    CompositeModelSpec,
    GraphEvents,
    GraphNode,
    NodeType,
)
from mlrollouts.builders.common import DEFAULT_UPSTREAM_TEMPLATE
from mlrollouts.composite.components import Component, node_refs
from mlrollouts.core.durations import parse_duration
from mlserving.router.graph.model import Graph
from mlserving.router.table import RouteTable

Obj = dict[str, Any]

# Graph fields in seconds are durations in the API.
_API_NAMES = {
    "timeoutSeconds": "timeout",
    "initialBackoffSeconds": "initialBackoff",
    "maxBackoffSeconds": "maxBackoff",
    "drainSeconds": "drain",
}
_NODE_TAGS = {t.value for t in NodeType}
_RELATIVE = re.compile(r"^([A-Za-z_]\w*(?:\.\w+)*): (.*)$", re.DOTALL)


class GraphSpecError(ValueError):
    """The graph cannot be run; the message has one line per problem, each naming the API field."""


@dataclass(frozen=True)
class Endpoint:
    """Where a Model node sends its requests."""

    upstream: str
    model: str

    @property
    def infer_url(self) -> str:
        return f"{self.upstream}/v2/models/{self.model}/infer"


def endpoints(
    spec: CompositeModelSpec,
    components: Mapping[str, Component],
    namespace: str,
    upstream_template: str = DEFAULT_UPSTREAM_TEMPLATE,
) -> dict[str, Endpoint]:
    """Each Model node's endpoint: its component's entry point, by node name.

    ``components`` (by node name) supply the model name each entry point serves; a node without one
    calls the component under its own name, as a ModelDeployment without ``spec.model.name`` does."""
    found = {}
    for node, ref in node_refs(spec).items():
        component = components.get(node)
        upstream = upstream_template.format(service=ref.component.service, namespace=namespace)
        found[node] = Endpoint(upstream, component.model if component else ref.component.name)
    return found


def graph_document(spec: CompositeModelSpec, nodes: Mapping[str, Endpoint]) -> Obj:
    """The route's ``graph`` as the router reads it (camelCase), before validation."""
    document: Obj = {
        "root": spec.root,
        "nodes": [_node_document(node, nodes.get(node.name)) for node in spec.nodes],
        "timeoutSeconds": parse_duration(spec.timeout),
        "maxConcurrency": spec.max_concurrency,
    }
    if spec.events is not None:
        document["events"] = _events_document(spec.events)
    return document


def _node_document(node: GraphNode, endpoint: Endpoint | None) -> Obj:
    document: Obj = {"name": node.name, "type": node.type.value, "onError": node.on_error.value}
    if node.timeout is not None:
        document["timeoutSeconds"] = parse_duration(node.timeout)
    if node.default_outputs is not None:
        document["defaultOutputs"] = [_dump(output) for output in node.default_outputs]
    if node.type == NodeType.MODEL and endpoint is not None:
        document |= {"upstream": endpoint.upstream, "model": endpoint.model}
    if node.children:
        document["children"] = list(node.children)
    if node.mappings is not None:
        document["mappings"] = [dict(mapping) for mapping in node.mappings]
    if node.combiner is not None:
        document["combiner"] = _dump(node.combiner)
    if node.cases:
        document["cases"] = [_dump(case) for case in node.cases]
    if node.default is not None:
        document["default"] = node.default
    return document


def _events_document(events: GraphEvents) -> Obj:
    document = _dump(events)
    for field in ("initialBackoff", "maxBackoff", "timeout", "drain"):
        document[f"{field}Seconds"] = parse_duration(document.pop(field))
    return document


def _dump(model: Any) -> Obj:
    dumped: Obj = model.model_dump(mode="json", by_alias=True, exclude_none=True)
    return dumped


def build_graph(spec: CompositeModelSpec, nodes: Mapping[str, Endpoint]) -> Graph:
    """The graph the router runs; raises :class:`GraphSpecError` naming the API fields."""
    try:
        return Graph.model_validate(graph_document(spec, nodes))
    except ValidationError as exc:
        raise GraphSpecError(_api_errors(spec, exc, base=())) from None


def route_table(name: str, graph: Graph) -> RouteTable:
    """One route ``name`` (clients call ``/v2/models/<name>/infer``) that runs ``graph``."""
    try:
        return RouteTable.model_validate({"routes": [{"name": name, "model": name, "graph": graph}]})
    except ValidationError as exc:
        raise GraphSpecError(_route_errors(exc)) from None


def composite_route_table(name: str, spec: CompositeModelSpec, nodes: Mapping[str, Endpoint]) -> RouteTable:
    """The route table of a composite: its graph under its own name."""
    check_own_name(name, spec)
    return route_table(name, build_graph(spec, nodes))


def check_own_name(name: str, spec: CompositeModelSpec) -> None:
    """A component may not share the composite's name: both entry points are the Service ``<name>``,
    so the composite's router would take the component's place."""
    for ref in node_refs(spec).values():
        if ref.component.service == name:
            raise GraphSpecError(
                f"{ref.location}: {ref.component} has this CompositeModel's own name; their entry points "
                f"would both be Service {name!r} (rename one of them)"
            )


def _route_errors(exc: ValidationError) -> str:
    lines = []
    for error in exc.errors(include_url=False):
        field = error["loc"][-1] if error["loc"] else "name"
        message = error["msg"].removeprefix("Value error, ")
        where = "metadata.name" if field in ("name", "model") else "metadata"
        lines.append(f"{where}: {message}")
    return "\n".join(lines)


def _api_errors(spec: CompositeModelSpec, exc: ValidationError, base: tuple[Any, ...]) -> str:
    lines = []
    for error in exc.errors(include_url=False):
        parts: list[Any] = [*base, *error["loc"]]
        message = error["msg"].removeprefix("Value error, ")
        relative = _RELATIVE.match(message)
        if relative:
            parts += relative.group(1).split(".")
            message = relative.group(2)
        lines.append(f"{api_path(spec, parts)}: {message}")
    return "\n".join(lines)


def api_path(spec: CompositeModelSpec, graph_path: Sequence[Any]) -> str:
    """The CompositeModel field of a location in the graph (``nodes.2.upstream`` ->
    ``spec.nodes[2].modelDeployment``)."""
    path = "spec"
    node: GraphNode | None = None
    parts = [int(p) if isinstance(p, str) and p.isdigit() else p for p in graph_path]
    for position, part in enumerate(parts):
        in_node = position >= 2 and parts[0] == "nodes"
        if isinstance(part, int):
            path += f"[{part}]"
            if position == 1 and parts[0] == "nodes" and part < len(spec.nodes):
                node = spec.nodes[part]
            continue
        if in_node and position == 2 and part in _NODE_TAGS:
            continue  # the discriminator of the node union, not a field
        if in_node and position <= 3 and part in ("upstream", "model") and node is not None:
            part = node.component_field or part
        path += f".{_API_NAMES.get(part, part)}"
    return path
