"""The graph spec in the route table: every node type parses, and a bad graph names its field."""

from __future__ import annotations

import pytest
import yaml

from mlserving.router import RouteTable, RouteTableError
from mlserving.router.graph import (
    CombinerType,
    EnsembleNode,
    Graph,
    ModelNode,
    OnError,
    SequenceNode,
    SwitchNode,
)

FULL = """
routes:
  - name: credit
    model: credit-score
    graph:
      root: entry
      timeoutSeconds: 2
      maxConcurrency: 4
      events:
        sink: http://profile-sink:8080/events
        mode: binary
        filter: {output: score, op: gt, value: 0.8}
      nodes:
        - {name: income, type: Model, upstream: "http://credit-income.risk.svc:8080/", model: credit-income}
        - name: history
          type: Model
          upstream: http://credit-history:8080
          model: credit-history
          timeoutSeconds: 0.3
          onError: Default
          defaultOutputs: [{name: value, datatype: FP32, value: 0.5}]
        - {name: behaviour, type: Model, upstream: "http://credit-behaviour:8080", model: b, onError: Skip}
        - name: score
          type: Ensemble
          children: [income, history, behaviour]
          combiner: {type: linear, weights: [0.5, 0.3, 0.2], bias: 0.1, output: value}
        - {name: scaler, type: Model, upstream: "http://scaler:8080", model: scaler}
        - name: pipeline
          type: Sequence
          children: [scaler, score]
          mappings: [{scaled: input}]
        - name: entry
          type: Switch
          cases:
            - when: {input: input, feature: 2, op: ge, value: 100000}
              node: pipeline
          default: score
"""


def graph_of(nodes: str, root: str = "a", extra: str = "") -> str:
    return f"routes: [{{name: r, model: m, graph: {{root: {root}, nodes: {nodes} {extra}}}}}]"


def rejected(text: str) -> str:
    with pytest.raises(RouteTableError) as exc:
        RouteTable.from_yaml(text)
    return str(exc.value)


A = "{name: a, type: Model, upstream: 'http://a', model: a}"
B = "{name: b, type: Model, upstream: 'http://b', model: b}"


def test_every_node_type_parses_and_round_trips():
    table = RouteTable.from_yaml(FULL)
    route = table.route_for_model("credit-score")
    assert route is not None and route.variants == []
    graph = route.graph
    assert isinstance(graph, Graph)
    assert (graph.root, graph.timeout_seconds, graph.max_concurrency) == ("entry", 2, 4)
    income = graph.node("income")
    assert isinstance(income, ModelNode) and income.upstream == "http://credit-income.risk.svc:8080"
    history = graph.node("history")
    assert history.on_error == OnError.DEFAULT and history.default_outputs[0].value == 0.5
    score = graph.node("score")
    assert isinstance(score, EnsembleNode) and score.combiner.type == CombinerType.LINEAR
    assert score.combiner.weights == [0.5, 0.3, 0.2] and score.combiner.bias == 0.1
    assert isinstance(graph.node("pipeline"), SequenceNode)
    entry = graph.node("entry")
    assert isinstance(entry, SwitchNode) and entry.cases[0].when.feature == 2 and entry.default == "score"
    assert graph.events is not None and graph.events.mode == "binary" and graph.events.queue_size == 1000
    document = yaml.safe_load(table.to_yaml())
    assert document["routes"][0]["graph"]["nodes"][1]["defaultOutputs"][0]["datatype"] == "FP32"
    assert RouteTable.from_yaml(table.to_yaml()) == table


@pytest.mark.parametrize(
    ("nodes", "root", "extra", "expected"),
    [
        (f"[{A}]", "ghost", "", "routes.0.graph: root: 'ghost' is not a node"),
        (f"[{A}, {A}]", "a", "", "nodes.1.name: duplicate node name 'a'"),
        (
            "[{name: e, type: Ensemble, children: [a, ghost]}, " + A + "]",
            "e",
            "",
            "nodes.0.children.1: 'ghost' is not a node",
        ),
        (
            "[{name: s, type: Sequence, children: [s]}]",
            "s",
            "",
            "nodes.0.children.0: node 's' refers to itself",
        ),
        (
            "[{name: x, type: Sequence, children: [y]}, {name: y, type: Ensemble, children: [x]}]",
            "x",
            "",
            "the graph has a cycle: x -> y -> x",
        ),
        (
            "[{name: w, type: Switch, cases: [{when: {op: eq, value: 1}, node: a}], default: ghost}, "
            + A
            + "]",
            "w",
            "",
            "nodes.0.default: 'ghost' is not a node",
        ),
        (
            f"[{A}, {B}, {{name: e, type: Ensemble, children: [a, b], combiner: {{type: weightedMean, weights: [1]}}}}]",
            "e",
            "",
            "nodes.2.Ensemble: combiner.weights: needs one weight per child (2), got 1",
        ),
        (
            f"[{A}, {{name: e, type: Ensemble, children: [a], combiner: {{type: mean, weights: [1]}}}}]",
            "e",
            "",
            "weights: only weightedMean and linear take weights, not mean",
        ),
        (
            f"[{A}, {{name: e, type: Ensemble, children: [a], combiner: {{type: linear}}}}]",
            "e",
            "",
            "weights: combiner linear needs weights",
        ),
        (
            f"[{A}, {B}, {{name: e, type: Ensemble, children: [a, b], combiner: {{type: weightedMean, weights: [1, -1]}}}}]",
            "e",
            "",
            "weightedMean needs non-negative weights with a positive sum",
        ),
        (
            f"[{A}, {{name: e, type: Ensemble, children: [a], combiner: {{type: stack}}}}]",
            "e",
            "",
            "node: the stack combiner needs node",
        ),
        (
            f"[{A}, {B}, {{name: e, type: Ensemble, children: [a], combiner: {{type: stack, node: s}}}}, {{name: s, type: Sequence, children: [b]}}]",
            "e",
            "",
            "nodes.2.combiner.node: 's' is a Sequence node; stack needs a Model node",
        ),
        (
            "[{name: a, type: Model, upstream: 'http://a', model: a, onError: Skip}, {name: s, type: Sequence, children: [a]}]",
            "s",
            "",
            "nodes.0.onError: 'a' is children.0 of Sequence 's', which cannot skip a node",
        ),
        (
            "[{name: a, type: Model, upstream: 'http://a', model: a, onError: Skip}, "
            "{name: w, type: Switch, cases: [{when: {op: eq, value: 1}, node: a}]}]",
            "w",
            "",
            "'a' is cases.0.node of Switch 'w', which cannot skip a node",
        ),
        (
            "[{name: a, type: Model, upstream: 'http://a', model: a, onError: Skip}]",
            "a",
            "",
            "the root 'a' cannot be skipped",
        ),
        (
            f"[{{name: a, type: Model, upstream: 'http://a', model: a, onError: Skip}}, {B}, {{name: m, type: Model, upstream: 'http://m', model: m}},"
            " {name: e, type: Ensemble, children: [a, b], combiner: {type: stack, node: m}}]",
            "e",
            "",
            "a stack needs every child's output",
        ),
        (
            "[{name: a, type: Model, upstream: 'http://a', model: a, onError: Default}]",
            "a",
            "",
            "defaultOutputs: onError Default needs defaultOutputs",
        ),
        (
            "[{name: a, type: Model, upstream: 'http://a', model: a, defaultOutputs: [{name: v, value: 1}]}]",
            "a",
            "",
            "defaultOutputs: only used with onError Default",
        ),
        (
            "[{name: a, type: Model, upstream: 'http://a', model: a, onError: Default, defaultOutputs: [{name: v, datatype: FP99, value: 1}]}]",
            "a",
            "",
            "nodes.0.Model.defaultOutputs.0.datatype",
        ),
        (
            "[{name: a, type: Model, upstream: 'http://a', model: a, onError: Default, defaultOutputs: [{name: v, value: yes-no}]}]",
            "a",
            "",
            "nodes.0.Model.defaultOutputs.0: value: datatype FP64 needs numbers or booleans",
        ),
        (
            f"[{A}, {B}, {{name: s, type: Sequence, children: [a, b], mappings: []}}]",
            "s",
            "",
            "mappings: needs one entry per hop (1 for 2 children), got 0",
        ),
        (
            "[{name: a, type: Gadget}]",
            "a",
            "",
            "does not match any of the expected tags: 'Model', 'Sequence', 'Ensemble', 'Switch'",
        ),
        (
            "[{name: a, type: Model, upstream: 'http://a', model: a, children: [b]}]",
            "a",
            "",
            "nodes.0.Model.children: Extra inputs are not permitted",
        ),
        ("[{name: a, type: Model, upstream: 'ftp://a', model: a}]", "a", "", "nodes.0.Model.upstream"),
        ("[{name: a, type: Model, model: a}]", "a", "", "nodes.0.Model.upstream: Field required"),
        ("[{name: A_1, type: Model, upstream: 'http://a', model: a}]", "A_1", "", "nodes.0.Model.name"),
        ("[{name: s, type: Sequence, children: []}]", "s", "", "nodes.0.Sequence.children"),
        ("[{name: w, type: Switch, cases: []}]", "w", "", "nodes.0.Switch.cases"),
        (f"[{A}]", "a", ", timeoutSeconds: 0", "routes.0.graph.timeoutSeconds"),
        (f"[{A}]", "a", ", events: {sink: 'not a url'}", "routes.0.graph.events.sink"),
        (f"[{A}]", "a", ", events: {sink: 'http://s', queueSize: 0}", "routes.0.graph.events.queueSize"),
    ],
)
def test_bad_graphs_name_the_field(nodes, root, extra, expected):
    assert expected in rejected(graph_of(nodes, root, extra))


def test_skip_is_allowed_for_a_child_of_a_combining_ensemble():
    text = graph_of(
        "[{name: a, type: Model, upstream: 'http://a', model: a, onError: Skip}, "
        + B
        + ", {name: e, type: Ensemble, children: [a, b], combiner: {type: weightedMean, weights: [1, 3]}}]",
        "e",
    )
    graph = RouteTable.from_yaml(text).routes[0].graph
    assert graph is not None and graph.node("a").on_error == OnError.SKIP


def test_a_node_shared_by_two_parents_is_not_a_cycle():
    text = graph_of(
        f"[{A}, {B}, {{name: e1, type: Ensemble, children: [a, b]}}, {{name: e2, type: Ensemble, children: [a, e1]}}]",
        "e2",
    )
    assert RouteTable.from_yaml(text).routes[0].graph is not None
