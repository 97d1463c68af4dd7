"""Deletion: finalizers and deletionTimestamp, owner-reference garbage collection, namespaces."""

from __future__ import annotations

import pytest

from support import wait_until

pytestmark = pytest.mark.integration

CMS = "/api/v1/namespaces/default/configmaps"
MERGE = {"Content-Type": "application/merge-patch+json"}


def owned_by(owner: dict, name: str) -> dict:
    meta = owner["metadata"]
    ref = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "name": meta["name"],
        "uid": meta["uid"],
        "blockOwnerDeletion": True,
    }
    return {"metadata": {"name": name, "ownerReferences": [ref]}}


def exists(http, path: str) -> bool:
    return http.get(path).status_code == 200


def test_finalizers_hold_the_object_until_removed(http):
    http.post(CMS, json={"metadata": {"name": "a", "finalizers": ["example.com/cleanup"]}})
    deleting = http.delete(f"{CMS}/a")
    assert deleting.status_code == 200
    meta = http.get(f"{CMS}/a").json()["metadata"]
    assert meta["deletionTimestamp"] and meta["finalizers"] == ["example.com/cleanup"]
    again = http.delete(f"{CMS}/a")  # deleting again changes nothing
    assert again.json()["metadata"]["resourceVersion"] == meta["resourceVersion"]
    forbidden = http.patch(
        f"{CMS}/a", json={"metadata": {"finalizers": ["example.com/cleanup", "new"]}}, headers=MERGE
    )
    assert forbidden.status_code == 422
    assert "no new finalizers can be added" in forbidden.json()["message"]
    released = http.patch(f"{CMS}/a", json={"metadata": {"finalizers": None}}, headers=MERGE)
    assert released.status_code == 200
    assert http.get(f"{CMS}/a").status_code == 404


def test_delete_preconditions(http):
    http.post(CMS, json={"metadata": {"name": "a"}})
    wrong = http.request("DELETE", f"{CMS}/a", json={"preconditions": {"uid": "not-the-uid"}})
    assert wrong.status_code == 409
    assert exists(http, f"{CMS}/a")


def test_background_garbage_collection(http):
    owner = http.post(CMS, json={"metadata": {"name": "owner"}}).json()
    http.post(CMS, json=owned_by(owner, "child-1"))
    child2 = http.post(CMS, json=owned_by(owner, "child-2")).json()
    grandchild = owned_by(child2, "grandchild")
    http.post(CMS, json=grandchild)
    other_owner = http.post(CMS, json={"metadata": {"name": "other-owner"}}).json()
    shared = owned_by(owner, "shared")
    shared["metadata"]["ownerReferences"] += owned_by(other_owner, "x")["metadata"]["ownerReferences"]
    http.post(CMS, json=shared)
    http.delete(f"{CMS}/owner", params={"propagationPolicy": "Background"})
    assert not exists(http, f"{CMS}/owner")
    wait_until(
        lambda: not exists(http, f"{CMS}/child-1") and not exists(http, f"{CMS}/grandchild"),
        message="dependents collected",
    )
    assert not exists(http, f"{CMS}/child-2")
    # An object with another living owner survives and loses the dangling reference.
    survivor = http.get(f"{CMS}/shared").json()
    assert [ref["name"] for ref in survivor["metadata"]["ownerReferences"]] == ["other-owner"]


def test_foreground_deletion_waits_for_dependents(http):
    owner = http.post(CMS, json={"metadata": {"name": "owner"}}).json()
    child = owned_by(owner, "child")
    child["metadata"]["finalizers"] = ["example.com/slow"]
    http.post(CMS, json=child)
    http.request("DELETE", f"{CMS}/owner", json={"propagationPolicy": "Foreground"})
    wait_until(
        lambda: http.get(f"{CMS}/child").json()["metadata"].get("deletionTimestamp"),
        message="the dependent being deleted",
    )
    held = http.get(f"{CMS}/owner").json()["metadata"]
    assert held["deletionTimestamp"] and "foregroundDeletion" in held["finalizers"]
    http.patch(f"{CMS}/child", json={"metadata": {"finalizers": None}}, headers=MERGE)
    wait_until(lambda: not exists(http, f"{CMS}/owner"), message="the owner deleted after its dependents")
    assert not exists(http, f"{CMS}/child")


def test_orphan_deletion_keeps_dependents(http):
    owner = http.post(CMS, json={"metadata": {"name": "owner"}}).json()
    http.post(CMS, json=owned_by(owner, "child"))
    http.delete(f"{CMS}/owner", params={"propagationPolicy": "Orphan"})
    assert not exists(http, f"{CMS}/owner")
    child = http.get(f"{CMS}/child").json()
    assert "ownerReferences" not in child["metadata"]


def test_owner_across_kinds(http):
    deployment = http.post(
        "/apis/apps/v1/namespaces/default/deployments", json={"metadata": {"name": "web"}, "spec": {}}
    ).json()
    ref = {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web", "uid": deployment["metadata"]["uid"]}
    http.post(
        "/api/v1/namespaces/default/services", json={"metadata": {"name": "web", "ownerReferences": [ref]}}
    )
    http.delete("/apis/apps/v1/namespaces/default/deployments/web")
    wait_until(
        lambda: not exists(http, "/api/v1/namespaces/default/services/web"), message="service collected"
    )


def test_deleting_a_namespace_deletes_its_contents(http):
    http.post("/api/v1/namespaces", json={"metadata": {"name": "team"}})
    http.post("/api/v1/namespaces/team/configmaps", json={"metadata": {"name": "a"}})
    http.post("/api/v1/namespaces/team/configmaps", json={"metadata": {"name": "b", "finalizers": ["x/y"]}})
    http.delete("/api/v1/namespaces/team")
    wait_until(lambda: not exists(http, "/api/v1/namespaces/team/configmaps/a"), message="contents deleted")
    ns = http.get("/api/v1/namespaces/team").json()
    assert ns["status"]["phase"] == "Terminating"
    refused = http.post("/api/v1/namespaces/team/configmaps", json={"metadata": {"name": "c"}})
    assert refused.status_code == 403
    http.patch("/api/v1/namespaces/team/configmaps/b", json={"metadata": {"finalizers": None}}, headers=MERGE)
    wait_until(lambda: not exists(http, "/api/v1/namespaces/team"), message="namespace gone")


def test_delete_collection_by_label(http):
    for name, team in (("a", "x"), ("b", "x"), ("c", "y")):
        http.post(CMS, json={"metadata": {"name": name, "labels": {"team": team}}})
    response = http.delete(CMS, params={"labelSelector": "team=x"})
    assert response.status_code == 200
    assert [i["metadata"]["name"] for i in http.get(CMS).json()["items"]] == ["c"]


def test_system_namespaces_may_not_be_deleted(http):
    response = http.delete("/api/v1/namespaces/default")
    assert response.status_code == 403
    assert "may not be deleted" in response.json()["message"]
    assert http.get("/api/v1/namespaces/default").status_code == 200
