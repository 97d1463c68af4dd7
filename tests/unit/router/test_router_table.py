"""The route table model: round trips, and bad tables rejected with the offending field named."""

from __future__ import annotations

import pytest

from mlserving.router import ROUTES_CONFIGMAP_KEY, Route, RouteTable, RouteTableError, Stickiness, Variant
from mlserving.router.graph import Combiner, CombinerType, EnsembleNode, Graph, ModelNode

GOOD = """
routes:
  - name: iris
    model: iris
    variants:
      - {name: stable, upstreams: ["http://iris-a:8080/"], weight: 90}
      - {name: canary, upstreams: ["http://iris-b:8080", "http://iris-c:8080"], weight: 10, model: iris-v2}
      - {name: candidate, upstreams: ["http://iris-d:8080"]}
    stickiness: {header: x-user-id}
    shadow: {variant: candidate, percent: 20}
    timeouts: {connectSeconds: 0.5, requestSeconds: 10}
"""


def test_parse_and_round_trip():
    table = RouteTable.from_yaml(GOOD)
    route = table.route_for_model("iris")
    assert route is not None and route.name == "iris"
    assert [v.name for v in route.variants] == ["stable", "canary", "candidate"]
    assert route.variants[0].upstreams == ["http://iris-a:8080"]  # trailing slash dropped
    assert route.variants[2].weight == 0
    assert route.stickiness == Stickiness(header="x-user-id")
    assert route.shadow is not None and route.shadow.percent == 20
    assert route.timeouts.connect_seconds == 0.5
    data = table.to_configmap_data()
    assert list(data) == [ROUTES_CONFIGMAP_KEY] == ["routes.yaml"]
    assert "connectSeconds" in data["routes.yaml"]
    assert RouteTable.from_yaml(data["routes.yaml"]) == table


def test_built_from_python_like_the_operator_does():
    graph = Graph(
        root="both",
        nodes=[
            ModelNode(name="rules", upstream="http://fraud-rules:8080", model="fraud-rules"),
            ModelNode(name="net", upstream="http://fraud-net:8080", model="fraud-net"),
            EnsembleNode(name="both", children=["rules", "net"], combiner=Combiner(type=CombinerType.MAX)),
        ],
    )
    table = RouteTable(
        routes=[
            Route(
                name="fraud",
                model="fraud",
                variants=[Variant(name="a", upstreams=["http://fraud-1:8080"], weight=1)],
            ),
            Route(name="fraud-graph", model="fraud-graph", graph=graph),
        ]
    )
    assert RouteTable.from_yaml(table.to_yaml()) == table
    assert table.to_dict()["routes"][1]["graph"]["nodes"][2]["combiner"]["type"] == "max"


def test_a_route_has_variants_or_a_graph():
    graph = "{root: a, nodes: [{name: a, type: Model, upstream: 'http://a', model: a}]}"
    with pytest.raises(RouteTableError, match=r"routes\.0\.variants: a graph route has no variants"):
        RouteTable.from_yaml(
            f"routes: [{{name: r, model: m, graph: {graph}, variants: [{{name: a, upstreams: ['http://x'], weight: 1}}]}}]"
        )
    with pytest.raises(RouteTableError, match=r"routes\.0\.variants: a route needs at least one variant"):
        RouteTable.from_yaml("routes: [{name: r, model: m}]")
    with pytest.raises(RouteTableError, match="shadow: not available on a graph route"):
        RouteTable.from_yaml(
            f"routes: [{{name: r, model: m, graph: {graph}, shadow: {{variant: a, percent: 1}}}}]"
        )
    with pytest.raises(RouteTableError, match=r"routes\.0\.graph\.root: Field required") as exc:
        RouteTable.from_yaml("routes: [{name: r, model: m, graph: {nodes: []}}]")
    assert "variants" not in str(exc.value)  # the graph's own error, not a second one about variants


@pytest.mark.parametrize(
    ("snippet", "expected"),
    [
        ("variants: [{name: a, upstreams: ['http://x'], weight: 0}]", "sum to a positive total"),
        ("variants: [{name: a, upstreams: ['http://x'], weight: -1}]", "routes.0.variants.0.weight"),
        (
            "variants: [{name: a, upstreams: ['http://x'], weight: 1}], shadow: {variant: ghost, percent: 5}",
            "shadow.variant 'ghost'",
        ),
        ("variants: [{name: a, upstreams: ['ftp://x'], weight: 1}]", "routes.0.variants.0.upstreams"),
        ("variants: [{name: Bad_Name, upstreams: ['http://x'], weight: 1}]", "routes.0.variants.0.name"),
        ("variants: []", "routes.0.variants"),
        (
            "variants: [{name: a, upstreams: ['http://x'], weight: 1}, {name: a, upstreams: ['http://y']}]",
            "duplicate variant names",
        ),
        ("variants: [{name: a, upstreams: ['http://x'], weight: 1}], stickiness: {}", "exactly one"),
        ("variants: [{name: a, upstreams: ['http://x'], weight: 1}], colour: red", "routes.0.colour"),
    ],
)
def test_bad_tables_name_the_field(snippet, expected):
    with pytest.raises(RouteTableError) as exc:
        RouteTable.from_yaml(f"routes: [{{name: r, model: m, {snippet}}}]")
    assert expected in str(exc.value)


def test_duplicate_models_and_garbage():
    one = "{name: %s, model: m, variants: [{name: a, upstreams: ['http://x'], weight: 1}]}"
    with pytest.raises(RouteTableError, match="duplicate route models"):
        RouteTable.from_yaml(f"routes: [{one % 'r1'}, {one % 'r2'}]")
    with pytest.raises(RouteTableError, match="not valid YAML"):
        RouteTable.from_yaml("routes: [unclosed")
    with pytest.raises(RouteTableError, match="mapping"):
        RouteTable.from_yaml("- 1\n- 2\n")
    assert RouteTable.from_yaml("") == RouteTable()
