"""Discovery documents, version and OpenAPI endpoints, the audit record, and kmock reactions."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.integration

GROUPS = [
    "apps",
    "networking.k8s.io",
    "coordination.k8s.io",
    "events.k8s.io",
    "discovery.k8s.io",
    "apiextensions.k8s.io",
    "rbac.authorization.k8s.io",
    "policy",
    "gateway.networking.k8s.io",
    "monitoring.coreos.com",
]


def test_core_group(http):
    assert http.get("/api").json()["versions"] == ["v1"]
    core = http.get("/api/v1").json()
    assert core["kind"] == "APIResourceList" and core["groupVersion"] == "v1"
    names = {r["name"]: r for r in core["resources"]}
    for plural in (
        "namespaces",
        "pods",
        "services",
        "configmaps",
        "endpoints",
        "events",
        "secrets",
        "serviceaccounts",
    ):
        assert plural in names, plural
    assert names["namespaces"]["namespaced"] is False
    assert names["pods"]["kind"] == "Pod" and "watch" in names["pods"]["verbs"]
    assert "pods/status" in names


def test_named_groups(http):
    listed = {g["name"] for g in http.get("/apis").json()["groups"]}
    assert set(GROUPS) <= listed
    apps = {r["name"]: r for r in http.get("/apis/apps/v1").json()["resources"]}
    assert {"deployments", "deployments/status", "deployments/scale", "replicasets"} <= set(apps)
    assert apps["deployments/scale"]["kind"] == "Scale"
    gateway = {r["name"] for r in http.get("/apis/gateway.networking.k8s.io/v1").json()["resources"]}
    assert {"httproutes", "gateways", "httproutes/status"} <= gateway
    lease = http.get("/apis/coordination.k8s.io/v1").json()["resources"]
    assert lease[0]["kind"] == "Lease"
    assert http.get("/apis/nothing.example.com/v1").status_code == 404


def test_version_and_openapi(http):
    version = http.get("/version").json()
    assert (version["major"], version["minor"]) == ("1", "32")
    assert (
        "/openapi/v3/apis/apps/v1?hash="
        in http.get("/openapi/v3").json()["paths"]["apis/apps/v1"]["serverRelativeURL"]
    )
    assert http.get("/openapi/v2").json()["swagger"] == "2.0"
    assert http.get("/readyz").text == "ok"


def test_every_request_is_audited(http, apiserver, tmp_path):
    http.post("/api/v1/namespaces/default/configmaps", json={"metadata": {"name": "a"}})
    http.patch(
        "/api/v1/namespaces/default/configmaps/a",
        json={"data": {"k": "v"}},
        headers={"Content-Type": "application/merge-patch+json"},
    )
    http.get("/apis/apps/v1/deployments")
    http.get("/api/v1/namespaces/default/configmaps/missing")
    http.delete("/api/v1/namespaces/default/configmaps/a")
    wanted = [
        ("create", "", "configmaps", "", "default", 201),
        ("patch", "", "configmaps", "", "default", 200),
        ("list", "apps", "deployments", "", "", 200),
        ("get", "", "configmaps", "", "default", 404),
        ("delete", "", "configmaps", "", "default", 200),
    ]

    def shape(record):
        keys = ("verb", "apiGroup", "resource", "subresource", "namespace", "code")
        return tuple(record.get(k) for k in keys)

    assert [shape(r) for r in apiserver.audit if "resource" in r] == wanted
    on_disk = [json.loads(line) for line in (tmp_path / "apiserver-audit.jsonl").read_text().splitlines()]
    assert [shape(r) for r in on_disk if "resource" in r] == wanted


def test_kmock_reactions_take_precedence(http, apiserver):
    """The emulator is a kmock handler: tests can still script a reply, e.g. to inject a failure."""
    apiserver.emulator["get /api/v1/namespaces/default/configmaps"] << 503
    assert http.get("/api/v1/namespaces/default/configmaps").status_code == 503
    assert http.get("/api/v1/namespaces").status_code == 200


def test_aggregated_discovery(http, widget_crd):
    accept = (
        "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,"
        "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json"
    )
    response = http.get("/apis", headers={"Accept": accept})
    assert (
        response.headers["Content-Type"]
        == "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
    )
    body = response.json()
    assert body["kind"] == "APIGroupDiscoveryList" and body["apiVersion"] == "apidiscovery.k8s.io/v2"
    groups = {item["metadata"]["name"]: item for item in body["items"]}
    apps = {r["resource"]: r for r in groups["apps"]["versions"][0]["resources"]}
    assert apps["deployments"]["responseKind"] == {"group": "apps", "version": "v1", "kind": "Deployment"}
    assert apps["deployments"]["scope"] == "Namespaced"
    assert {s["subresource"] for s in apps["deployments"]["subresources"]} == {"status", "scale"}
    widgets = groups["example.com"]["versions"][0]["resources"][0]
    assert (widgets["resource"], widgets["shortNames"], widgets["categories"]) == (
        "widgets",
        ["wdg"],
        ["things"],
    )
    core = http.get("/api", headers={"Accept": accept}).json()
    assert [item["metadata"]["name"] for item in core["items"]] == [""]
    assert "pods" in {r["resource"] for r in core["items"][0]["versions"][0]["resources"]}
    # Clients that do not ask for it get the legacy documents.
    assert http.get("/apis").json()["kind"] == "APIGroupList"
