"""What a component's object says about a graph node: ready or not, why, and the model it serves."""

from __future__ import annotations

from typing import Any

import pytest

from mlrollouts.api import parse_resource
from mlrollouts.composite import node_refs, read_component, traffic_split
from mlrollouts.composite.components import (
    MISSING,
    NOT_READY,
    PROGRESSING,
    READY,
    ROLLED_BACK,
    UNREACHABLE,
    ComponentRef,
)

MD = ComponentRef("ModelDeployment", "credit-income")
EXP = ComponentRef("Experiment", "income-ab")


def md(status: dict[str, Any], **spec: Any) -> dict[str, Any]:
    return {"spec": {"model": {"uri": "file:///m.skops"}, **spec}, "status": status}


CASES = [
    pytest.param(MD, None, False, MISSING, "ModelDeployment 'credit-income' not found", id="md-missing"),
    pytest.param(
        MD, md({"phase": "Pending"}), False, NOT_READY, "no stable revision yet (Pending)", id="md-new"
    ),
    pytest.param(
        MD,
        md(
            {
                "phase": "Progressing",
                "stableRevision": "a1",
                "conditions": [{"type": "Ready", "status": "False"}],
            }
        ),
        False,
        NOT_READY,
        "Progressing: revision a1 is not serving yet",
        id="md-first-revision-starting",
    ),
    pytest.param(
        MD,
        md({"phase": "Healthy", "stableRevision": "a1", "conditions": [{"type": "Ready", "status": "True"}]}),
        True,
        READY,
        "Healthy: serving a1",
        id="md-healthy",
    ),
    pytest.param(
        MD,
        md(
            {
                "phase": "Progressing",
                "stableRevision": "a1",
                "candidateRevision": "b2",
                "weights": [
                    {"revision": "a1", "desired": 75},
                    {"revision": "b2", "desired": 25, "shadow": 0},
                ],
            }
        ),
        True,
        PROGRESSING,
        "Progressing: a1 75%, b2 25%",
        id="md-canary",
    ),
    pytest.param(
        MD,
        md(
            {"phase": "Degraded", "stableRevision": "a1", "failedRevision": "b2", "message": "AnalysisFailed"}
        ),
        True,
        ROLLED_BACK,
        "rolled back b2: AnalysisFailed; serving a1",
        id="md-rolled-back",
    ),
    pytest.param(
        MD,
        md({"phase": "Degraded", "stableRevision": "a1", "message": "invalid spec: x"}),
        False,
        NOT_READY,
        "is Degraded: invalid spec: x",
        id="md-degraded",
    ),
    pytest.param(
        MD,
        md(
            {"phase": "Healthy", "stableRevision": "a1", "conditions": [{"type": "Ready", "status": "True"}]},
            traffic={"provider": "IngressNginx"},
        ),
        False,
        UNREACHABLE,
        "traffic provider IngressNginx",
        id="md-behind-an-ingress",
    ),
    pytest.param(EXP, None, False, MISSING, "Experiment 'income-ab' not found", id="exp-missing"),
    pytest.param(
        EXP,
        {"status": {"phase": "Pending", "message": "waiting for a"}},
        False,
        NOT_READY,
        "is Pending: waiting for a",
        id="exp-pending",
    ),
    pytest.param(
        EXP,
        {
            "status": {
                "phase": "Running",
                "variants": [{"name": "a", "weight": 80}, {"name": "b", "weight": 20}],
            }
        },
        True,
        READY,
        "Running: a 80%, b 20%",
        id="exp-running",
    ),
    pytest.param(
        EXP,
        {"status": {"phase": "Concluded", "winner": {"variant": "b"}}},
        True,
        READY,
        "winner b",
        id="exp-won",
    ),
    pytest.param(EXP, {"status": {"phase": "Degraded"}}, False, NOT_READY, "is Degraded", id="exp-degraded"),
    pytest.param(
        EXP,
        {"spec": {"traffic": {"provider": "GatewayAPI"}}, "status": {"phase": "Running"}},
        False,
        UNREACHABLE,
        "traffic provider GatewayAPI",
        id="exp-behind-a-gateway",
    ),
]


@pytest.mark.parametrize(("ref", "obj", "ready", "reason", "message"), CASES)
def test_component_readiness(ref: ComponentRef, obj: Any, ready: bool, reason: str, message: str) -> None:
    component = read_component(ref, obj)
    assert (component.ready, component.reason) == (ready, reason)
    assert message in component.message
    assert component.problem == (reason in (MISSING, UNREACHABLE))


def test_the_served_model_name_comes_from_the_component():
    named = read_component(
        MD,
        md(
            {"stableRevision": "a1", "conditions": [{"type": "Ready", "status": "True"}]},
            model={"uri": "file:///m", "name": "income"},
        ),
    )
    assert named.model == "income"
    assert (
        read_component(
            MD, md({"stableRevision": "a1", "conditions": [{"type": "Ready", "status": "True"}]})
        ).model
        == "credit-income"
    )
    assert read_component(EXP, {"status": {"phase": "Running"}}).model == "income-ab"


def test_traffic_split_of_either_kind():
    assert traffic_split(
        MD,
        md({"weights": [{"revision": "a1", "desired": 90}, {"revision": "b2", "desired": 10, "shadow": 50}]}),
    ) == ("a1 90%, b2 10% (shadow 50%)")
    assert traffic_split(
        EXP, {"status": {"variants": [{"name": "x", "weight": 50}, {"name": "y", "weight": 50}]}}
    ) == ("x 50%, y 50%")
    assert traffic_split(MD, None) == "-"


def test_node_refs_name_the_field_of_each_model_node():
    resource = parse_resource(
        {
            "apiVersion": "mlrollouts.io/v1alpha1",
            "kind": "CompositeModel",
            "metadata": {"name": "c"},
            "spec": {
                "root": "e",
                "nodes": [
                    {"name": "e", "type": "Ensemble", "children": ["a", "b"]},
                    {"name": "a", "type": "Model", "modelDeployment": "md-a"},
                    {"name": "b", "type": "Model", "experiment": "exp-b"},
                ],
            },
        }
    )
    refs = node_refs(resource.spec)
    assert set(refs) == {"a", "b"}
    assert (
        refs["a"].location == "spec.nodes[1].modelDeployment"
        and str(refs["a"].component) == "ModelDeployment/md-a"
    )
    assert refs["b"].location == "spec.nodes[2].experiment" and str(refs["b"].component) == "Experiment/exp-b"
