"""The graph the router runs, translated from CompositeModel specs: field by field, and every
objection of the data plane's graph model reported at the CompositeModel field that caused it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from mlrollouts.api import CompositeModel, parse_resource
from mlrollouts.composite import (
    Endpoint,
    GraphSpecError,
    api_path,
    build_graph,
    composite_route_table,
    endpoints,
    graph_document,
    read_component,
)
from mlrollouts.composite.components import ComponentRef
from mlserving.router.graph.model import EnsembleNode, Events, ModelNode, SequenceNode, SwitchNode
from mlserving.router.table import RouteTable

ROOT = Path(__file__).resolve().parents[3]
VALID = [
    *sorted((ROOT / "tests/manifests/valid").glob("compositemodel-*.yaml")),
    ROOT / "examples/composite/compositemodel.yaml",
]


def load(path: Path) -> CompositeModel:
    resource = parse_resource(yaml.safe_load(path.read_text()))
    assert isinstance(resource, CompositeModel)
    return resource


def spec_of(**spec: Any) -> CompositeModel:
    body = {
        "apiVersion": "mlrollouts.io/v1alpha1",
        "kind": "CompositeModel",
        "metadata": {"name": "credit", "namespace": "risk"},
        "spec": spec,
    }
    resource = parse_resource(body)
    assert isinstance(resource, CompositeModel)
    return resource


def md(name: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "type": "Model", "modelDeployment": name, **extra}


def translate(resource: CompositeModel, namespace: str = "risk") -> RouteTable:
    nodes = endpoints(resource.spec, {}, namespace)
    return composite_route_table(resource.metadata.name or "", resource.spec, nodes)


@pytest.mark.parametrize("path", VALID, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_valid_composite_is_a_graph_the_router_accepts(path: Path) -> None:
    resource = load(path)
    table = translate(resource)
    again = RouteTable.from_yaml(table.to_yaml())  # what the router reads from the ConfigMap
    [route] = again.routes
    assert route.name == route.model == resource.metadata.name
    assert route.graph is not None and route.graph.root == resource.spec.root
    assert [n.name for n in route.graph.nodes] == [n.name for n in resource.spec.nodes]


def test_durations_become_seconds_and_every_field_is_carried():
    graph = build_graph(
        (full := load(ROOT / "tests/manifests/valid/compositemodel-full.yaml")).spec,
        endpoints(full.spec, {}, "default"),
    )
    assert graph.timeout_seconds == 2.0 and graph.max_concurrency == 8
    history = graph.node("history")
    assert isinstance(history, ModelNode)
    assert history.timeout_seconds == pytest.approx(0.3) and history.on_error.value == "Default"
    assert history.default_outputs is not None and history.default_outputs[0].value == 0.5
    assert graph.node("behaviour").on_error.value == "Skip"
    large = graph.node("large")
    assert isinstance(large, SequenceNode) and large.mappings == [{"scaled": "features"}]
    stacked = graph.node("stacked")
    assert isinstance(stacked, EnsembleNode)
    assert (stacked.combiner.type.value, stacked.combiner.node, stacked.combiner.input) == (
        "stack",
        "meta",
        "features",
    )
    entry = graph.node("entry")
    assert isinstance(entry, SwitchNode) and entry.cases[0].when.value == "business"
    assert entry.cases[1].when.value == 100000.0
    events = graph.events
    assert events is not None and events.mode == "binary" and events.include_inputs
    assert (events.initial_backoff_seconds, events.max_backoff_seconds) == (0.2, 5.0)
    assert (events.timeout_seconds, events.drain_seconds, events.queue_size) == (2.0, 3.0, 500)
    assert events.filter is not None and events.filter.value == 0.8


def test_model_nodes_call_the_entry_point_of_their_component():
    resource = spec_of(
        root="e",
        nodes=[
            {"name": "e", "type": "Ensemble", "children": ["a", "b"]},
            md("a"),
            {"name": "b", "type": "Model", "experiment": "ab-test"},
        ],
    )
    served = read_component(
        ComponentRef("ModelDeployment", "a"),
        {
            "spec": {"model": {"name": "scorer"}},
            "status": {
                "stableRevision": "r1",
                "phase": "Healthy",
                "conditions": [{"type": "Ready", "status": "True"}],
            },
        },
    )
    found = endpoints(resource.spec, {"a": served}, "risk", "http://{service}.{namespace}:8080")
    assert found["a"] == Endpoint("http://a.risk:8080", "scorer")
    assert found["b"] == Endpoint("http://ab-test.risk:8080", "ab-test")
    assert found["a"].infer_url == "http://a.risk:8080/v2/models/scorer/infer"
    assert "e" not in found


def test_api_event_defaults_are_the_routers_defaults():
    resource = spec_of(root="a", nodes=[md("a")], events={"sink": "http://sink/events"})
    document = graph_document(resource.spec, endpoints(resource.spec, {}, "risk"))
    assert Events.model_validate(document["events"]) == Events(sink="http://sink/events")


def test_graph_defaults_apply_where_the_spec_says_nothing():
    resource = spec_of(root="a", nodes=[md("a")])
    graph = build_graph(resource.spec, endpoints(resource.spec, {}, "risk"))
    assert graph.timeout_seconds == 30.0 and graph.max_concurrency == 16 and graph.events is None


REFUSALS = [
    pytest.param(
        {
            "root": "seq",
            "nodes": [
                {"name": "seq", "type": "Sequence", "children": ["a", "b"]},
                md("a", onError="Skip"),
                md("b"),
            ],
        },
        "spec.nodes[1].onError: 'a' is children.0 of Sequence 'seq', which cannot skip a node",
        id="skip-in-a-sequence",
    ),
    pytest.param(
        {
            "root": "ens",
            "nodes": [
                {
                    "name": "ens",
                    "type": "Ensemble",
                    "children": ["a", "b"],
                    "combiner": {"type": "stack", "node": "m"},
                },
                md("a", onError="Skip"),
                md("b"),
                md("m"),
            ],
        },
        "spec.nodes[1].onError: 'a' is children.0 of Ensemble 'ens': a stack needs every child's output",
        id="skip-under-a-stack",
    ),
    pytest.param(
        {
            "root": "a",
            "nodes": [
                md(
                    "a",
                    onError="Default",
                    defaultOutputs=[{"name": "label", "datatype": "BYTES", "value": 1}],
                )
            ],
        },
        "spec.nodes[0].defaultOutputs[0].value: datatype BYTES needs strings",
        id="default-value-of-another-type",
    ),
    pytest.param(
        {"root": "a", "nodes": [md("a", onError="Default", defaultOutputs=[{"name": "v", "value": []}])]},
        "spec.nodes[0].defaultOutputs[0].value: value must not be an empty list",
        id="empty-default-value",
    ),
]


@pytest.mark.parametrize(("spec", "expected"), REFUSALS)
def test_what_the_router_refuses_is_refused_at_the_api_field(spec: dict, expected: str) -> None:
    resource = spec_of(**spec)
    with pytest.raises(GraphSpecError) as refused:
        translate(resource)
    assert expected in str(refused.value)


def test_a_component_serving_an_invalid_model_name_is_named_at_its_reference():
    resource = spec_of(root="a", nodes=[md("a")])
    served = read_component(
        ComponentRef("ModelDeployment", "a"), {"spec": {"model": {"name": "bad name"}}, "status": {}}
    )
    with pytest.raises(GraphSpecError) as refused:
        build_graph(resource.spec, endpoints(resource.spec, {"a": served}, "risk"))
    assert str(refused.value).startswith("spec.nodes[0].modelDeployment: model 'bad name'")


def test_a_name_the_router_cannot_use_as_a_route_names_the_metadata():
    resource = spec_of(root="a", nodes=[md("a")])
    with pytest.raises(GraphSpecError, match=r"^metadata\.name: route name 'credit\.v2'"):
        composite_route_table("credit.v2", resource.spec, endpoints(resource.spec, {}, "risk"))


def test_graph_paths_map_to_api_fields():
    resource = spec_of(
        root="e",
        nodes=[
            {"name": "e", "type": "Ensemble", "children": ["a"]},
            md("a"),
            {"name": "x", "type": "Model", "experiment": "t"},
        ],
        events={"sink": "http://s/e"},
    )
    spec = resource.spec
    assert api_path(spec, ("nodes", 1, "Model", "upstream")) == "spec.nodes[1].modelDeployment"
    assert api_path(spec, ("nodes", 2, "Model", "model")) == "spec.nodes[2].experiment"
    assert api_path(spec, ["nodes", "1", "timeoutSeconds"]) == "spec.nodes[1].timeout"
    assert (
        api_path(spec, ("nodes", 0, "Ensemble", "combiner", "weights", 2))
        == "spec.nodes[0].combiner.weights[2]"
    )
    assert api_path(spec, ("events", "initialBackoffSeconds")) == "spec.events.initialBackoff"
    assert api_path(spec, ("timeoutSeconds",)) == "spec.timeout"
    assert api_path(spec, ("root",)) == "spec.root"


def test_a_component_with_the_composites_own_name_is_refused():
    resource = spec_of(
        root="e",
        nodes=[{"name": "e", "type": "Ensemble", "children": ["a"]}, md("a", modelDeployment="credit")],
    )
    with pytest.raises(
        GraphSpecError, match=r"^spec\.nodes\[1\]\.modelDeployment: ModelDeployment/credit has"
    ):
        translate(resource)
