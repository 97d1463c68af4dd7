"""The composite's entry point objects: the shared router builders, owned by the CompositeModel,
wired to its route table, and valid Kubernetes objects."""

from __future__ import annotations

import kubernetes_validate

from mlrollouts.builders.composite import composite_endpoint, composite_owner
from mlrollouts.builders.router import route_configmap, router_objects
from mlserving.router.graph.model import Graph
from mlserving.router.table import ROUTES_CONFIGMAP_KEY, Route, RouteTable

OWNER = composite_owner("credit", "risk", uid="uid-1")
K8S_VERSION = "1.32.0"


def test_router_objects_are_owned_by_the_composite_and_read_its_route_table():
    objects = {o["kind"]: o for o in router_objects(OWNER, "mlrollouts/serving:1", 3)}
    assert set(objects) == {"ServiceAccount", "Role", "RoleBinding", "Deployment", "Service"}
    for obj in objects.values():
        assert obj["metadata"]["labels"]["mlrollouts.io/owner"] == "CompositeModel.credit"
        [ref] = obj["metadata"]["ownerReferences"]
        assert (ref["kind"], ref["name"], ref["uid"]) == ("CompositeModel", "credit", "uid-1")
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
    deployment = objects["Deployment"]
    assert deployment["metadata"]["name"] == "credit-router" and deployment["spec"]["replicas"] == 3
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "mlrollouts/serving:1"
    assert container["args"][:3] == ["route", "--configmap", "risk/credit-routes"]
    assert objects["Service"]["metadata"]["name"] == "credit"
    assert objects["Role"]["rules"][0]["resourceNames"] == ["credit-routes"]


def test_route_table_configmap_holds_the_graph():
    graph = Graph.model_validate(
        {
            "root": "a",
            "nodes": [{"name": "a", "type": "Model", "upstream": "http://a.risk.svc:80", "model": "a"}],
        }
    )
    table = RouteTable(routes=[Route(name="credit", model="credit", graph=graph)])
    configmap = route_configmap(OWNER, table)
    kubernetes_validate.validate(configmap, K8S_VERSION, strict=True)
    assert configmap["metadata"]["name"] == "credit-routes"
    assert RouteTable.from_yaml(configmap["data"][ROUTES_CONFIGMAP_KEY]) == table


def test_endpoint_follows_the_upstream_template():
    assert composite_endpoint(OWNER) == "http://credit.risk.svc:80/v2/models/credit/infer"
    assert composite_endpoint(OWNER, "http://127.0.0.1:9000/{namespace}/{service}") == (
        "http://127.0.0.1:9000/risk/credit/v2/models/credit/infer"
    )
