"""CompositeModel passes against an in-memory Kubernetes client and a fixed clock: what each pass
writes, the status it holds, and the events it emits."""

from __future__ import annotations

import asyncio
import copy
from datetime import UTC, datetime, timedelta
from typing import Any

from mlrollouts.controller.compositemodel import CompositeModelController
from mlrollouts.controller.config import OperatorConfig
from mlrollouts.controller.metrics import REGISTRY
from mlrollouts.controller.resource import Outcome, ResourceState, run_pass
from mlserving.router.graph.model import EnsembleNode, ModelNode, SwitchNode
from mlserving.router.table import ROUTES_CONFIGMAP_KEY, RouteTable
from support.fake_kube import FakeKube

T0 = datetime(2026, 1, 5, 12, 0, 0, tzinfo=UTC)
CONFIG = OperatorConfig(prometheus_url=None, poll=1.0)
NS = "risk"
COMPONENTS = ("credit-income", "credit-history", "credit-behaviour")


def composite(**spec: Any) -> dict:
    body = {
        "apiVersion": "mlrollouts.io/v1alpha1",
        "kind": "CompositeModel",
        "metadata": {"name": "credit", "namespace": NS, "uid": "uid-credit", "generation": 1},
        "spec": {
            "root": "route",
            "nodes": [
                {
                    "name": "route",
                    "type": "Switch",
                    "cases": [{"when": {"feature": 0, "op": "lt", "value": 2}, "node": "income"}],
                    "default": "score",
                },
                {
                    "name": "score",
                    "type": "Ensemble",
                    "children": ["income", "history", "behaviour"],
                    "combiner": {"type": "linear", "weights": [0.5, 0.3, 0.2]},
                },
                {"name": "income", "type": "Model", "modelDeployment": "credit-income"},
                {"name": "history", "type": "Model", "modelDeployment": "credit-history"},
                {"name": "behaviour", "type": "Model", "experiment": "credit-behaviour"},
            ],
            **spec,
        },
    }
    return body


def model_deployment(name: str, status: dict | None = None, **spec: Any) -> dict:
    return {
        "apiVersion": "mlrollouts.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": name, "namespace": NS, "generation": 1},
        "spec": {"model": {"uri": f"file:///models/{name}.skops", "name": f"{name}-model"}, **spec},
        "status": status
        if status is not None
        else {
            "phase": "Healthy",
            "stableRevision": "a1b2c3",
            "conditions": [{"type": "Ready", "status": "True"}],
        },
    }


def experiment(name: str, phase: str = "Running") -> dict:
    return {
        "apiVersion": "mlrollouts.io/v1alpha1",
        "kind": "Experiment",
        "metadata": {"name": name, "namespace": NS, "generation": 1},
        "spec": {"variants": [{"name": "a", "modelDeployment": "x"}, {"name": "b", "modelDeployment": "y"}]},
        "status": {
            "phase": phase,
            "variants": [{"name": "a", "weight": 60}, {"name": "b", "weight": 40}],
        },
    }


def world(*skip: str) -> FakeKube:
    """The composite and its components (all serving), except those named in ``skip``."""
    fake = FakeKube()
    fake.put(composite())
    for name in ("credit-income", "credit-history"):
        if name not in skip:
            fake.put(model_deployment(name))
    if "credit-behaviour" not in skip:
        fake.put(experiment("credit-behaviour"))
    return fake


def run(fake: FakeKube, state: ResourceState, at: datetime = T0, config: OperatorConfig = CONFIG) -> Outcome:
    body = fake.object("CompositeModel", NS, "credit")
    assert body is not None
    outcome = asyncio.run(
        run_pass(CompositeModelController(), copy.deepcopy(body), fake, config, state, now=at)
    )
    assert outcome is not None
    return outcome


def router_ready(fake: FakeKube) -> None:
    dep = fake.object("Deployment", NS, "credit-router")
    assert dep is not None, "the router Deployment was never applied"
    dep["status"] = {"readyReplicas": dep["spec"]["replicas"], "replicas": dep["spec"]["replicas"]}


def status(fake: FakeKube) -> dict:
    return fake.object("CompositeModel", NS, "credit")["status"]


def nodes(fake: FakeKube) -> dict[str, dict]:
    return {n["name"]: n for n in status(fake)["nodes"]}


def table(fake: FakeKube) -> RouteTable:
    cm = fake.object("ConfigMap", NS, "credit-routes")
    assert cm is not None, "the route table was never applied"
    return RouteTable.from_yaml(cm["data"][ROUTES_CONFIGMAP_KEY])


def reasons(outcome: Outcome) -> list[str]:
    return [e.reason for e in outcome.events]


def test_a_missing_component_is_degraded_naming_the_node_and_the_field():
    fake, state = world("credit-history"), ResourceState()
    outcome = run(fake, state)
    held = status(fake)
    assert held["phase"] == "Degraded" and held["observedGeneration"] == 1
    assert "node 'history'" in held["message"] and "spec.nodes[3].modelDeployment" in held["message"]
    assert "'credit-history' not found" in held["message"]
    conditions = {c["type"]: c for c in held["conditions"]}
    assert (
        conditions["Degraded"]["status"] == "True" and conditions["Degraded"]["reason"] == "ComponentMissing"
    )
    assert conditions["Ready"]["status"] == "False"
    assert nodes(fake)["history"]["reason"] == "ComponentMissing" and not nodes(fake)["history"]["ready"]
    assert "ComponentMissing" in reasons(outcome)
    assert outcome.requeue_after == CONFIG.poll  # looks again for the component
    # the graph is applied all the same: the rest of it serves, the router names the missing node
    assert fake.object("Deployment", NS, "credit-router") is not None
    assert table(fake).routes[0].graph is not None

    again = run(fake, state, T0 + timedelta(seconds=1))
    assert "ComponentMissing" not in reasons(again)  # one event per change


def test_all_components_ready_make_the_composite_ready_with_its_endpoint_and_graph():
    fake, state = world(), ResourceState()
    first = run(fake, state)
    assert status(fake)["phase"] == "Pending" and "router" in status(fake)["message"]
    assert "GraphApplied" in reasons(first)
    assert fake.object("Secret", NS, "credit-router-key") is not None
    assert fake.object("Service", NS, "credit") is not None

    router_ready(fake)
    ready = run(fake, state, T0 + timedelta(seconds=1))
    held = status(fake)
    assert held["phase"] == "Ready", held
    assert held["endpoint"] == "http://credit.risk.svc:80/v2/models/credit/infer"
    assert {c["type"]: c["status"] for c in held["conditions"]} == {"Ready": "True", "Degraded": "False"}
    assert all(n["ready"] for n in held["nodes"])
    assert "GraphReady" in reasons(ready) and "GraphApplied" not in reasons(ready)
    assert ready.requeue_after is not None and ready.requeue_after > CONFIG.poll

    [route] = table(fake).routes
    assert route.name == route.model == "credit"
    graph = route.graph
    assert graph is not None and graph.root == "route"
    income, behaviour = graph.node("income"), graph.node("behaviour")
    assert isinstance(income, ModelNode) and isinstance(behaviour, ModelNode)
    # a ModelDeployment is called at its entry point, under the model name it serves
    assert (income.upstream, income.model) == ("http://credit-income.risk.svc:80", "credit-income-model")
    # an Experiment at its router, under its own name
    assert (behaviour.upstream, behaviour.model) == (
        "http://credit-behaviour.risk.svc:80",
        "credit-behaviour",
    )
    score = graph.node("score")
    assert isinstance(score, EnsembleNode) and score.combiner.weights == [0.5, 0.3, 0.2]
    assert isinstance(graph.node("route"), SwitchNode)
    assert (
        nodes(fake)["income"]["endpoint"]
        == "http://credit-income.risk.svc:80/v2/models/credit-income-model/infer"
    )
    assert nodes(fake)["behaviour"]["component"] == "Experiment/credit-behaviour"


def test_a_component_canary_keeps_the_composite_ready_and_shows_in_the_node():
    fake, state = world(), ResourceState()
    run(fake, state)
    router_ready(fake)
    run(fake, state, T0 + timedelta(seconds=1))
    canary = {
        "phase": "Progressing",
        "stableRevision": "a1b2c3",
        "candidateRevision": "d4e5f6",
        "weights": [{"revision": "a1b2c3", "desired": 90}, {"revision": "d4e5f6", "desired": 10}],
    }
    fake.put(model_deployment("credit-income", canary))
    outcome = run(fake, state, T0 + timedelta(seconds=20))
    assert status(fake)["phase"] == "Ready"
    income = nodes(fake)["income"]
    assert income["ready"] and income["reason"] == "ComponentProgressing"
    assert "Progressing" in income["message"] and "d4e5f6 10%" in income["message"]
    assert "NodeNotReady" not in reasons(outcome)


def test_a_component_rollback_is_visible_in_the_node_and_as_an_event():
    fake, state = world(), ResourceState()
    run(fake, state)
    router_ready(fake)
    run(fake, state, T0 + timedelta(seconds=1))
    rolled_back = {
        "phase": "Degraded",
        "stableRevision": "a1b2c3",
        "failedRevision": "d4e5f6",
        "message": "AnalysisFailed: error rate 0.2 above 0.01",
        "weights": [{"revision": "a1b2c3", "desired": 100}],
    }
    fake.put(model_deployment("credit-income", rolled_back))
    outcome = run(fake, state, T0 + timedelta(seconds=20))
    income = nodes(fake)["income"]
    assert income["ready"] and income["reason"] == "ComponentRolledBack"
    assert "rolled back d4e5f6" in income["message"] and "serving a1b2c3" in income["message"]
    assert "ComponentRolledBack" in reasons(outcome)
    assert status(fake)["phase"] == "Ready"  # the stable revision still answers


def test_a_component_that_loses_its_stable_revision_makes_the_node_not_ready():
    fake, state = world(), ResourceState()
    run(fake, state)
    router_ready(fake)
    run(fake, state, T0 + timedelta(seconds=1))
    fake.put(model_deployment("credit-history", {"phase": "Degraded", "message": "ProgressDeadlineExceeded"}))
    outcome = run(fake, state, T0 + timedelta(seconds=20))
    assert status(fake)["phase"] == "Pending"
    assert "history" in status(fake)["message"]
    assert not nodes(fake)["history"]["ready"] and not nodes(fake)["score"]["ready"]
    assert nodes(fake)["score"]["message"] == "waiting for history"
    assert "NodeNotReady" in reasons(outcome)
    assert outcome.requeue_after == CONFIG.poll


def test_a_graph_change_writes_new_route_table_content_and_keeps_the_router():
    fake, state = world(), ResourceState()
    run(fake, state)
    router_ready(fake)
    run(fake, state, T0 + timedelta(seconds=1))
    router_before = copy.deepcopy(fake.object("Deployment", NS, "credit-router"))
    table_before = fake.object("ConfigMap", NS, "credit-routes")["data"]

    body = fake.object("CompositeModel", NS, "credit")
    body["spec"]["nodes"][1]["combiner"] = {"type": "mean"}
    body["metadata"]["generation"] = 2
    writes = len(fake.writes)
    outcome = run(fake, state, T0 + timedelta(seconds=2))

    assert fake.object("ConfigMap", NS, "credit-routes")["data"] != table_before
    score = table(fake).routes[0].graph.node("score")
    assert isinstance(score, EnsembleNode) and score.combiner.type.value == "mean"
    assert fake.object("Deployment", NS, "credit-router") == router_before  # no restart
    assert ("apply", "ConfigMap", "credit-routes") in fake.writes[writes:]
    assert ("apply", "Deployment", "credit-router") not in fake.writes[writes:]
    assert "GraphApplied" in reasons(outcome)
    assert status(fake)["observedGeneration"] == 2 and status(fake)["phase"] == "Ready"


def test_an_unchanged_pass_writes_nothing():
    fake, state = world(), ResourceState()
    run(fake, state)
    router_ready(fake)
    run(fake, state, T0 + timedelta(seconds=1))
    writes = len(fake.writes)
    again = run(fake, state, T0 + timedelta(seconds=11))
    assert again.applied == 0 and fake.writes[writes:] == [] and list(again.events) == []


def test_a_graph_the_router_would_refuse_is_degraded_naming_the_field():
    fake, state = FakeKube(), ResourceState()
    body = composite()
    body["spec"]["nodes"][4]["onError"] = "Skip"  # behaviour is an ensemble child: may be skipped
    body["spec"]["nodes"][2]["onError"] = "Skip"  # income is also a switch case: may not
    fake.put(body)
    outcome = run(fake, state)
    held = status(fake)
    assert held["phase"] == "Degraded" and "spec.nodes[2].onError" in held["message"]
    assert reasons(outcome) == ["InvalidSpec"]
    assert fake.names("ConfigMap") == [] and fake.names("Deployment") == []  # nothing is applied


def test_a_component_behind_a_gateway_cannot_be_called_and_is_degraded():
    fake, state = world("credit-income"), ResourceState()
    gateway = {"provider": "GatewayAPI", "gatewayAPI": {"parentRefs": [{"name": "gw"}]}}
    fake.put(model_deployment("credit-income", traffic=gateway))
    outcome = run(fake, state)
    held = status(fake)
    assert held["phase"] == "Degraded" and "spec.nodes[2].modelDeployment" in held["message"]
    assert "GatewayAPI" in held["message"]
    assert "ComponentUnreachable" in reasons(outcome)


def test_a_disallowed_router_image_is_refused():
    fake, state = FakeKube(), ResourceState()
    fake.put(composite(traffic={"router": {"image": "evil/router:1"}}))
    outcome = run(fake, state, config=OperatorConfig(allowed_images=("mlrollouts/*",)))
    assert reasons(outcome) == ["ImageNotAllowed"]
    assert "spec.traffic.router.image" in status(fake)["message"]
    assert fake.names("Deployment") == []


def test_a_fixed_spec_leaves_degraded():
    fake, state = world("credit-history"), ResourceState()
    run(fake, state)
    fake.put(model_deployment("credit-history"))
    router_ready(fake)
    outcome = run(fake, state, T0 + timedelta(seconds=1))
    held = status(fake)
    assert held["phase"] == "Ready"
    assert {c["type"]: c["status"] for c in held["conditions"]}["Degraded"] == "False"
    assert "NodeReady" in reasons(outcome)


def test_the_operator_metrics_follow_the_composite():
    fake, state, controller = world("credit-history"), ResourceState(), CompositeModelController()
    controller.record(NS, "credit", run(fake, state))
    labels = {"namespace": NS, "name": "credit"}
    assert REGISTRY.get_sample_value("mlrollouts_composite_phase", {**labels, "phase": "Degraded"}) == 1
    assert REGISTRY.get_sample_value("mlrollouts_composite_node_ready", {**labels, "node": "history"}) == 0
    assert REGISTRY.get_sample_value("mlrollouts_composite_node_ready", {**labels, "node": "income"}) == 1
    missing = {**labels, "reason": "ComponentMissing"}
    assert REGISTRY.get_sample_value("mlrollouts_composite_events_total", missing) == 1
    controller.forget(NS, "credit")
    assert REGISTRY.get_sample_value("mlrollouts_composite_phase", {**labels, "phase": "Degraded"}) is None
