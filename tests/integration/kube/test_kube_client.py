"""The shared Kubernetes client (``Kube`` and ``SyncKube``) against the API emulator over HTTP."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from kubernetes import client as k8s_client

from mlrollouts.controller.kube import (
    BearerToken,
    Call,
    Connection,
    Kube,
    KubeError,
    Resource,
    SyncKube,
    answer,
)
from mlrollouts.local.apiserver import ApiServer

pytestmark = pytest.mark.integration

UNSERVED = "absent.example.org/v1"


def crd(kind: str, plural: str, scope: str = "Namespaced") -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.example.com"},
        "spec": {
            "group": "example.com",
            "scope": scope,
            "names": {"plural": plural, "singular": kind.lower(), "kind": kind},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "x-kubernetes-preserve-unknown-fields": True,
                            "properties": {
                                "spec": {
                                    "type": "object",
                                    "properties": {"size": {"type": "integer", "maximum": 10}},
                                }
                            },
                        }
                    },
                }
            ],
        },
    }


def configmap(name: str, namespace: str = "default", **labels: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "data": {"k": "v"},
    }


@pytest.fixture
def kube(kubeconfig: Path):
    with SyncKube.from_environment(str(kubeconfig)) as client:
        yield client


def discovery_calls(api: ApiServer, path: str) -> int:
    return sum(1 for r in api.audit if r.get("path") == path and r.get("verb") == "get")


# --- discovery ---------------------------------------------------------------------------------------


def test_plural_and_scope_come_from_discovery(kube: SyncKube, apiserver: ApiServer) -> None:
    assert kube.resource("v1", "ConfigMap") == Resource("v1", "ConfigMap", "configmaps", namespaced=True)
    assert kube.resource("v1", "Endpoints").plural == "endpoints"  # no naive "+s" rule
    assert kube.resource("v1", "Namespace").namespaced is False
    ingress = kube.resource("networking.k8s.io/v1", "Ingress")
    assert (ingress.plural, ingress.namespaced) == ("ingresses", True)
    kube.create(crd("Gadget", "gadgetry"))  # a plural no rule could guess
    assert kube.resource("example.com/v1", "Gadget").plural == "gadgetry"
    # each group-version is asked once, however many kinds and calls follow
    kube.resource("v1", "ConfigMap")
    kube.list("v1", "ConfigMap", "default")
    kube.get("v1", "Secret", "default", "missing")
    assert discovery_calls(apiserver, "/api/v1") == 1


def test_a_kind_registered_after_discovery_is_found(kube: SyncKube, apiserver: ApiServer) -> None:
    kube.create(crd("Gadget", "gadgets"))
    assert kube.resource("example.com/v1", "Gadget").plural == "gadgets"
    kube.create(crd("Widget", "widgets", scope="Cluster"))
    widget = kube.resource("example.com/v1", "Widget")
    assert (widget.plural, widget.namespaced) == ("widgets", False)
    assert discovery_calls(apiserver, "/apis/example.com/v1") == 2


def test_paths_of_core_grouped_and_cluster_scoped_kinds() -> None:
    configmaps = Resource("v1", "ConfigMap", "configmaps", namespaced=True)
    deployments = Resource("apps/v1", "Deployment", "deployments", namespaced=True)
    namespaces = Resource("v1", "Namespace", "namespaces", namespaced=False)
    assert configmaps.path("ml", "x") == "/api/v1/namespaces/ml/configmaps/x"
    assert configmaps.path() == "/api/v1/configmaps"  # every namespace
    assert deployments.path("ml", "web", "status") == "/apis/apps/v1/namespaces/ml/deployments/web/status"
    assert namespaces.path("ignored", "ml") == "/api/v1/namespaces/ml"
    with pytest.raises(ValueError, match="namespace is required"):
        deployments.path(None, "web")
    with pytest.raises(ValueError, match=r"metadata\.namespace is required"):
        deployments.object_path({"metadata": {"name": "web"}})


# --- errors ------------------------------------------------------------------------------------------


def test_not_found_is_none_on_get_and_delete(kube: SyncKube) -> None:
    assert kube.get("v1", "ConfigMap", "default", "missing") is None
    assert kube.delete("v1", "ConfigMap", "default", "missing") is None
    # an API group the server does not serve (say, an add-on not installed) reads as missing too
    assert kube.get(UNSERVED, "Thing", "default", "t") is None
    assert kube.delete(UNSERVED, "Thing", "default", "t") is None


def test_errors_carry_the_status_and_the_servers_status_object(kube: SyncKube) -> None:
    kube.create(configmap("a"))
    with pytest.raises(KubeError) as conflict:
        kube.create(configmap("a"))
    assert conflict.value.status == 409
    assert conflict.value.body["reason"] == "AlreadyExists"
    assert str(conflict.value).startswith("409: POST /api/v1/namespaces/default/configmaps: ")
    with pytest.raises(KubeError) as unserved:
        kube.list(UNSERVED, "Thing", "default")
    assert unserved.value.status == 404
    with pytest.raises(KubeError) as unknown:
        kube.list("v1", "Gadget", "default")
    assert unknown.value.status == 404 and "serves no kind Gadget in v1" in str(unknown.value)
    with pytest.raises(KubeError) as missing:
        kube.merge_patch("v1", "ConfigMap", "default", "missing", {"data": {"k": "w"}})
    assert missing.value.status == 404
    kube.create(crd("Gadget", "gadgets"))
    too_big = {
        "apiVersion": "example.com/v1",
        "kind": "Gadget",
        "metadata": {"name": "g", "namespace": "default"},
    }
    too_big["spec"] = {"size": 11}
    with pytest.raises(KubeError) as invalid:
        kube.create(too_big)
    assert invalid.value.status == 422 and "spec.size" in invalid.value.message


def test_an_answer_that_is_not_a_status_object() -> None:
    call = Call("GET", "/api/v1/namespaces")
    with pytest.raises(KubeError) as plain:
        answer(call, httpx.Response(502, text="bad gateway from a proxy"))
    assert (plain.value.status, plain.value.message, plain.value.body) == (
        502,
        "bad gateway from a proxy",
        {},
    )
    with pytest.raises(KubeError, match="not a JSON object"):
        answer(call, httpx.Response(200, text="<html>"))
    assert answer(call, httpx.Response(200, json={"kind": "NamespaceList"})) == {"kind": "NamespaceList"}


# --- the calls ---------------------------------------------------------------------------------------


def test_sync_calls_on_core_custom_and_cluster_scoped_kinds(kube: SyncKube) -> None:
    kube.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "ml"}})
    assert kube.get("v1", "Namespace", None, "ml") is not None
    kube.create(configmap("a", "ml", app="x"))
    kube.create(configmap("b", "ml", app="y"))
    kube.create(configmap("c", "default", app="x"))
    assert [o["metadata"]["name"] for o in kube.list("v1", "ConfigMap", "ml", {"app": "x"})] == ["a"]
    everywhere = kube.list("v1", "ConfigMap", None, {"app": "x"})
    assert sorted(o["metadata"]["name"] for o in everywhere) == ["a", "c"]
    current = kube.get("v1", "ConfigMap", "ml", "a")
    assert current is not None
    current["data"] = {"k": "replaced"}
    assert kube.replace(current)["data"] == {"k": "replaced"}

    kube.create(crd("Gadget", "gadgets"))
    gadget = {"apiVersion": "example.com/v1", "kind": "Gadget", "metadata": {"name": "g", "namespace": "ml"}}
    kube.create({**gadget, "spec": {"size": 1}})
    kube.merge_patch(
        "example.com/v1", "Gadget", "ml", "g", {"status": {"phase": "Ready"}}, subresource="status"
    )
    kube.merge_patch(
        "example.com/v1", "Gadget", "ml", "g", {"status": {"phase": "ignored"}, "spec": {"size": 2}}
    )
    stored = kube.get("example.com/v1", "Gadget", "ml", "g")
    assert stored is not None
    assert (stored["spec"]["size"], stored["status"]["phase"]) == (2, "Ready")  # status only via /status
    kube.delete("example.com/v1", "Gadget", "ml", "g")
    assert kube.get("example.com/v1", "Gadget", "ml", "g") is None


async def test_the_operators_calls(kubeconfig: Path) -> None:
    async with Kube.from_environment(str(kubeconfig)) as kube:
        first = await kube.apply({**configmap("routes", app="web"), "data": {"k": "v", "old": "1"}})
        assert first["data"] == {"k": "v", "old": "1"}  # created
        applied = await kube.apply({**configmap("routes", app="web"), "data": {"k": "w"}})
        # server-side apply, not a merge: a field the manager stops applying is removed
        assert applied["metadata"]["uid"] == first["metadata"]["uid"] and applied["data"] == {"k": "w"}
        await kube.create(configmap("other", app="db"))
        listed = await kube.list("v1", "ConfigMap", "default", {"app": "web"})
        assert [o["metadata"]["name"] for o in listed] == ["routes"]
        patched = await kube.merge_patch(
            "v1", "ConfigMap", "default", "routes", {"data": {"k": None, "n": "1"}}
        )
        assert patched["data"] == {"n": "1"}
        with pytest.raises(KubeError) as conflict:
            await kube.create(configmap("other"))
        assert conflict.value.status == 409
        await kube.delete("v1", "ConfigMap", "default", "routes")
        assert await kube.get("v1", "ConfigMap", "default", "routes") is None
        await kube.delete("v1", "ConfigMap", "default", "routes")  # already gone: no error


# --- connection settings -----------------------------------------------------------------------------


def test_connection_from_a_kubeconfig_context(tmp_path: Path) -> None:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": "http://127.0.0.1:1/"}}],
        "users": [{"name": "u", "user": {"token": "s3cret"}}],
        "contexts": [
            {"name": "first", "context": {"cluster": "c", "user": "u"}},
            {"name": "ml", "context": {"cluster": "c", "user": "u", "namespace": "ml"}},
        ],
        "current-context": "first",
    }
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(config))
    assert Connection.load(str(path)).namespace == "default"
    connection = Connection.load(str(path), "ml", user_agent="tester/1")
    assert (connection.server, connection.namespace, connection.verify) == ("http://127.0.0.1:1", "ml", False)
    seen: list[httpx.Request] = []

    def server(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"kind": "APIResourceList", "resources": []})

    options = connection.http_options(timeout=1.0)
    with httpx.Client(**options, transport=httpx.MockTransport(server)) as http:
        SyncKube(http).get("v1", "ConfigMap", "ml", "x")
    assert seen[0].headers["Authorization"] == "Bearer s3cret"
    assert seen[0].headers["User-Agent"] == "tester/1"
    assert str(seen[0].url) == "http://127.0.0.1:1/api/v1"


def test_a_refused_token_is_renewed_once() -> None:
    configuration = k8s_client.Configuration()
    configuration.api_key["BearerToken"] = "Bearer old"
    sent: list[str] = []

    def server(request: httpx.Request) -> httpx.Response:
        sent.append(request.headers["Authorization"])
        return httpx.Response(200 if sent[-1] == "bearer new" else 401, json={})

    transport = httpx.MockTransport(server)
    with httpx.Client(base_url="http://api", auth=BearerToken(configuration), transport=transport) as http:
        assert http.get("/api").status_code == 401  # no other token to offer: the answer stands
        configuration.api_key["BearerToken"] = "bearer new"  # as the in-cluster loader writes it
        assert http.get("/api").status_code == 200
    assert sent == ["Bearer old", "Bearer old", "bearer new"]
