"""Router provider: route table ConfigMap the router reads, router workload, read-back."""

from __future__ import annotations

import pytest
from k8s_validation import validate_builtin
from traffic_support import context, live

from mlrollouts.api import RouterConfig, Stickiness
from mlrollouts.traffic import UnsupportedTraffic, provider_for
from mlserving.router.table import ROUTES_CONFIGMAP_KEY, RouteTable

P = provider_for("Router")


def ready(dep):
    return {**dep, "status": {"readyReplicas": dep["spec"]["replicas"]}}


def test_route_table_carries_weights_shadow_and_stickiness():
    ctx = context(RouterConfig(replicas=2, stickiness=Stickiness(header="x-user")))
    [cm] = P.set_weights(ctx, {"aaa111": 100, "bbb222": 0}, ("bbb222", 30))
    validate_builtin(cm)
    table = RouteTable.from_yaml(cm["data"][ROUTES_CONFIGMAP_KEY])
    route = table.route_for_model("iris")
    assert {v.name: v.weight for v in route.variants} == {"aaa111": 100, "bbb222": 0}
    assert route.variant("bbb222").upstreams == ["http://iris-bbb222.ml.svc:80"]
    assert route.shadow.variant == "bbb222" and route.shadow.percent == 30
    assert route.stickiness.header == "x-user"


def test_router_workload_objects_are_valid():
    objs = P.reconcile(context(RouterConfig(replicas=3, image="reg/serving:2")))
    for obj in objs:
        validate_builtin(obj)
    dep = next(o for o in objs if o["kind"] == "Deployment")
    assert dep["spec"]["replicas"] == 3
    assert dep["spec"]["template"]["spec"]["containers"][0]["image"] == "reg/serving:2"
    assert {o["kind"] for o in objs} == {"ServiceAccount", "Role", "RoleBinding", "Deployment", "Service"}


def test_weights_are_confirmed_only_with_the_table_stored_and_a_ready_router():
    ctx = context(RouterConfig())
    weights = {"aaa111": 80, "bbb222": 20}
    [cm] = P.set_weights(ctx, weights, None)
    dep = next(o for o in P.reconcile(ctx) if o["kind"] == "Deployment")
    assert P.verify(ctx, weights, live(cm)).confirmed is None
    assert P.verify(ctx, weights, live(cm, dep)).confirmed is None  # router not ready
    assert P.verify(ctx, weights, live(cm, ready(dep))).confirmed == weights
    broken = {**cm, "data": {ROUTES_CONFIGMAP_KEY: "routes: [{name: 1}]"}}
    rb = P.verify(ctx, weights, live(broken, ready(dep)))
    assert rb.confirmed is None and "routes.0" in rb.message


def test_no_traffic_anywhere_is_refused():
    with pytest.raises(UnsupportedTraffic):
        P.set_weights(context(), {"aaa111": 0}, None)


def test_finalize_names_every_router_object():
    kinds = {r.kind for r in P.finalize(context())}
    assert kinds == {"ConfigMap", "Deployment", "Service", "RoleBinding", "Role", "ServiceAccount"}
