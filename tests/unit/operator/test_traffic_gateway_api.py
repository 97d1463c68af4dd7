"""GatewayAPI provider: weighted HTTPRoute, trusted only when Accepted for the current generation."""

from __future__ import annotations

import pytest
from k8s_validation import validate_http_route
from traffic_support import context, live

from mlrollouts.api import GatewayApiConfig, ParentRef
from mlrollouts.traffic import UnsupportedTraffic, provider_for

P = provider_for("GatewayAPI")
CONFIG = GatewayApiConfig(
    parent_refs=[ParentRef(name="public", namespace="gw")], hostnames=["iris.example.com"]
)
WEIGHTS = {"aaa111": 90, "bbb222": 10}


def with_status(route, generation, accepted="True", observed=None):
    route = {**route, "metadata": {**route["metadata"], "generation": generation}}
    route["status"] = {
        "parents": [
            {
                "parentRef": {"name": "public", "namespace": "gw"},
                "controllerName": "example.com/gateway",
                "conditions": [
                    {
                        "type": "Accepted",
                        "status": accepted,
                        "reason": "Accepted",
                        "message": "",
                        "observedGeneration": observed if observed is not None else generation,
                        "lastTransitionTime": "2026-01-01T00:00:00Z",
                    }
                ],
            }
        ]
    }
    return route


def test_http_route_is_valid_with_weights_and_parents():
    [route] = P.set_weights(context(CONFIG), WEIGHTS, None)
    validate_http_route(route)
    assert route["spec"]["parentRefs"][0]["namespace"] == "gw"
    assert route["spec"]["hostnames"] == ["iris.example.com"]
    assert P.reconcile(context(CONFIG)) == []


def test_weights_trusted_only_when_accepted_for_current_generation():
    ctx = context(CONFIG)
    [route] = P.set_weights(ctx, WEIGHTS, None)
    assert P.verify(ctx, WEIGHTS, live(route)).confirmed is None  # no status yet
    stale = with_status(route, generation=3, observed=2)
    rb = P.verify(ctx, WEIGHTS, live(stale))
    assert rb.confirmed is None and "generation 3" in rb.message
    assert P.verify(ctx, WEIGHTS, live(with_status(route, 3, accepted="False"))).confirmed is None
    assert P.verify(ctx, WEIGHTS, live(with_status(route, 3))).confirmed == WEIGHTS
    validate_http_route(with_status(route, 3))


def test_missing_parent_refs_are_refused_with_the_field_named():
    with pytest.raises(UnsupportedTraffic, match="parentRefs"):
        P.set_weights(context(None), WEIGHTS, None)


def test_finalize_deletes_the_route():
    assert [r.kind for r in P.finalize(context(CONFIG))] == ["HTTPRoute"]
