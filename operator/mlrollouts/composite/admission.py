"""What the admission webhook checks in a CompositeModel that a CRD schema cannot express (pure).

CEL sees one object at a time and cannot follow references: whether the nodes form a cycle, or a
node lists itself, is a question of reachability. The answers come from the same checks the
operator runs before it builds a route table (:mod:`mlrollouts.composite.graph`), so a spec the
webhook admits is one the operator can run, and each problem names the field to fix.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from mlrollouts.api import format_validation_error
from mlrollouts.api.compositemodel import CompositeModelSpec
from mlrollouts.composite.components import NodeRef, node_refs
from mlrollouts.composite.graph import GraphSpecError, build_graph, check_own_name, endpoints


def parse_spec(spec: Mapping[str, Any]) -> tuple[CompositeModelSpec | None, list[str]]:
    """The spec as the API models read it, or the problems (one per field) when they refuse it."""
    try:
        return CompositeModelSpec.model_validate(dict(spec)), []
    except ValidationError as exc:
        lines = format_validation_error(exc).splitlines()
        problems = [
            f"spec: {line[len('<root>: ') :]}" if line.startswith("<root>: ") else f"spec.{line}"
            for line in lines
        ]
        return None, problems


def graph_problems(name: str, namespace: str, spec: Mapping[str, Any]) -> list[str]:
    """Every structural problem of a CompositeModel's graph (cycles, self-references, a component
    with the composite's own name), one line each naming its field; empty when it can run."""
    parsed, problems = parse_spec(spec)
    if parsed is None:
        return problems
    try:
        check_own_name(name, parsed)
        build_graph(parsed, endpoints(parsed, {}, namespace or "default"))
    except GraphSpecError as exc:
        return str(exc).splitlines()
    return []


def component_references(spec: Mapping[str, Any]) -> list[NodeRef]:
    """The ModelDeployments and Experiments the graph's Model nodes call (empty for a spec the
    models refuse: its structural problems come first)."""
    parsed, _ = parse_spec(spec)
    return [] if parsed is None else sorted(node_refs(parsed).values(), key=lambda ref: ref.index)
