"""Traffic providers switched off in values get no RBAC grants; the Prometheus Operator monitors pass
their relabelings through."""

from __future__ import annotations

from typing import Any

import pytest
from chart_render import VALUE_SETS, render

GATEWAY = ("gateway.networking.k8s.io", "httproutes")
INGRESS = ("networking.k8s.io", "ingresses")


def granted(values: dict[str, Any]) -> list[set[tuple[str, str]]]:
    """Per Role or ClusterRole: the (apiGroup, resource) pairs it grants."""
    rendered = render(values)
    roles = rendered.of_kind("ClusterRole") + rendered.of_kind("Role")
    assert roles
    return [
        {
            (group, resource)
            for rule in role["rules"]
            for group in rule["apiGroups"]
            for resource in rule["resources"]
        }
        for role in roles
    ]


@pytest.mark.parametrize("scope", ["default", "namespaced"])
def test_every_provider_is_granted_by_default(scope: str) -> None:
    for grants in granted(VALUE_SETS[scope]):
        assert {GATEWAY, INGRESS} <= grants


@pytest.mark.parametrize("scope", ["default", "namespaced"])
@pytest.mark.parametrize(
    ("provider", "gone", "kept"), [("gatewayAPI", GATEWAY, INGRESS), ("ingressNginx", INGRESS, GATEWAY)]
)
def test_a_disabled_provider_gets_no_grants(scope: str, provider: str, gone: tuple, kept: tuple) -> None:
    values = {**VALUE_SETS[scope], "providers": {provider: {"enabled": False}}}
    for grants in granted(values):
        assert gone not in grants
        assert kept in grants
        assert ("apps", "deployments") in grants  # the rest stays


def test_no_provider_grants_when_both_are_off() -> None:
    values = {"providers": {"gatewayAPI": {"enabled": False}, "ingressNginx": {"enabled": False}}}
    (grants,) = granted(values)
    assert not {group for group, _ in grants} & {"gateway.networking.k8s.io", "networking.k8s.io"}


RELABELINGS = [
    {"sourceLabels": ["__meta_kubernetes_pod_node_name"], "targetLabel": "node", "action": "replace"},
]
METRIC_RELABELINGS = [{"sourceLabels": ["__name__"], "regex": "go_.*", "action": "drop"}]


def test_monitors_have_no_relabelings_by_default() -> None:
    rendered = render(VALUE_SETS["monitoring"])
    endpoints = (
        rendered.one("ServiceMonitor")["spec"]["endpoints"]
        + rendered.one("PodMonitor")["spec"]["podMetricsEndpoints"]
    )
    for endpoint in endpoints:
        assert "relabelings" not in endpoint and "metricRelabelings" not in endpoint


@pytest.mark.parametrize(
    ("monitor", "kind", "key"),
    [
        ("serviceMonitor", "ServiceMonitor", "endpoints"),
        ("podMonitor", "PodMonitor", "podMetricsEndpoints"),
    ],
)
def test_monitor_relabelings_pass_through(monitor: str, kind: str, key: str) -> None:
    settings = {"enabled": True, "relabelings": RELABELINGS, "metricRelabelings": METRIC_RELABELINGS}
    rendered = render({"monitoring": {monitor: settings}})
    (endpoint,) = rendered.one(kind)["spec"][key]
    assert endpoint["relabelings"] == RELABELINGS
    assert endpoint["metricRelabelings"] == METRIC_RELABELINGS
    assert endpoint["path"] == "/metrics"  # the rest of the endpoint stays
