"""The Experiment's entry point objects: route table over the ModelDeployments' stable revisions,
the router with the shared signing key, and schema validity of every built object."""

from __future__ import annotations

import base64

import kubernetes_validate
import pytest

from mlrollouts.builders.experiment import Arm, experiment_owner, experiment_route_table
from mlrollouts.builders.router import route_configmap, router_objects, signing_key_secret
from mlserving.router.table import ROUTES_CONFIGMAP_KEY, RouteTable, RouteTableError

OWNER = experiment_owner("recommender", "ml", uid="uid-1")
ARMS = [
    Arm("baseline", "rec-a", "5f2a1c", "rec-a", 60),
    Arm("wide", "rec-b", "9b3e7d", "rec-b-model", 40),
    Arm("deep", "rec-c", "0c1d2e", "rec-c", 0),
]


def test_route_over_the_stable_revision_services():
    table = experiment_route_table(OWNER, ARMS, stickiness_header="x-user-id")
    route = table.route_for_model("recommender")
    assert route is not None and route.name == "recommender"
    assert [(v.name, v.weight, v.model) for v in route.variants] == [
        ("baseline", 60, "rec-a"),
        ("wide", 40, "rec-b-model"),
        ("deep", 0, "rec-c"),
    ]
    assert route.variants[1].upstreams == ["http://rec-b-9b3e7d.ml.svc:80"]
    assert route.stickiness is not None and route.stickiness.header == "x-user-id"


def test_configmap_round_trips_through_the_router_model():
    cm = route_configmap(OWNER, experiment_route_table(OWNER, ARMS))
    assert cm["metadata"]["name"] == "recommender-routes"
    assert cm["metadata"]["labels"]["mlrollouts.io/owner"] == "Experiment.recommender"
    assert cm["metadata"]["ownerReferences"][0]["kind"] == "Experiment"
    table = RouteTable.from_yaml(cm["data"][ROUTES_CONFIGMAP_KEY])
    assert {v.name: v.weight for v in table.routes[0].variants} == {"baseline": 60, "wide": 40, "deep": 0}


def test_a_route_without_traffic_is_refused():
    with pytest.raises((RouteTableError, ValueError), match="weights"):
        experiment_route_table(OWNER, [Arm("a", "x", "r1", "x", 0), Arm("b", "y", "r2", "y", 0)])


def test_router_replicas_share_the_key_from_the_secret():
    objects = router_objects(OWNER, image="mlrollouts/serving:0.1.0", replicas=2)
    deployment = next(o for o in objects if o["kind"] == "Deployment")
    assert deployment["spec"]["replicas"] == 2
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["args"][:3] == ["route", "--configmap", "ml/recommender-routes"]
    env = {e["name"]: e for e in container["env"]}
    assert env["MLROUTER_SIGNING_KEY"]["valueFrom"]["secretKeyRef"] == {
        "name": "recommender-router-key",
        "key": "signing-key",
    }
    assert env["MLROUTER_REQUIRE_SIGNING_KEY"]["value"] == "1"
    service = next(o for o in objects if o["kind"] == "Service")
    assert service["metadata"]["name"] == "recommender"


def test_signing_key_secret():
    secret = signing_key_secret(OWNER, "k" * 43)
    assert base64.b64decode(secret["data"]["signing-key"]).decode() == "k" * 43
    with pytest.raises(ValueError, match="16 bytes"):
        signing_key_secret(OWNER, "short")


def test_every_object_is_a_valid_kubernetes_object():
    objects = [
        *router_objects(OWNER, image="mlrollouts/serving:0.1.0", replicas=2),
        route_configmap(OWNER, experiment_route_table(OWNER, ARMS)),
        signing_key_secret(OWNER, "0123456789abcdef0123"),
    ]
    for obj in objects:
        kubernetes_validate.validate(obj, "1.32.0", strict=True)
