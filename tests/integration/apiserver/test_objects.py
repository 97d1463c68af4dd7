"""Object semantics over raw HTTP: metadata stamping, versions, conflicts, patches, status, dry-run."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.integration

CMS = "/api/v1/namespaces/default/configmaps"
DEPLOYS = "/apis/apps/v1/namespaces/default/deployments"
MERGE = {"Content-Type": "application/merge-patch+json"}
JSONPATCH = {"Content-Type": "application/json-patch+json"}
SMP = {"Content-Type": "application/strategic-merge-patch+json"}
APPLY = {"Content-Type": "application/apply-patch+yaml"}


def cm(name: str, **data: str) -> dict:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": data}


def deployment(name: str, containers: list[dict], replicas: int = 1) -> dict:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": containers}},
        },
    }


def test_create_stamps_metadata_and_returns_201(http):
    response = http.post(CMS, json=cm("a", k="v"))
    assert response.status_code == 201
    meta = response.json()["metadata"]
    assert meta["namespace"] == "default"
    assert len(meta["uid"]) == 36
    assert meta["creationTimestamp"].endswith("Z")
    assert int(meta["resourceVersion"]) > 0
    assert http.get(f"{CMS}/a").json() == response.json()


def test_resource_versions_are_global_and_monotonic(http):
    versions = []
    for name in ("a", "b", "c"):
        versions.append(int(http.post(CMS, json=cm(name)).json()["metadata"]["resourceVersion"]))
    patched = http.patch(f"{CMS}/a", json={"data": {"x": "1"}}, headers=MERGE).json()
    versions.append(int(patched["metadata"]["resourceVersion"]))
    assert versions == sorted(versions) and len(set(versions)) == 4
    listed = http.get(CMS).json()
    assert int(listed["metadata"]["resourceVersion"]) >= versions[-1]


def test_generate_name(http):
    response = http.post(CMS, json={"metadata": {"generateName": "gen-"}})
    assert response.status_code == 201
    name = response.json()["metadata"]["name"]
    assert name.startswith("gen-") and len(name) == len("gen-") + 5


def test_create_without_name_is_invalid(http):
    response = http.post(CMS, json={"metadata": {}})
    assert response.status_code == 422
    assert "metadata.name: Required value" in response.json()["message"]


def test_invalid_name_is_rejected(http):
    response = http.post(CMS, json=cm("Not_A_Name"))
    assert response.status_code == 422
    assert "metadata.name: Invalid value" in response.json()["message"]


def test_already_exists_is_409(http):
    http.post(CMS, json=cm("a"))
    response = http.post(CMS, json=cm("a"))
    assert response.status_code == 409
    body = response.json()
    assert body["kind"] == "Status" and body["reason"] == "AlreadyExists"
    assert body["message"] == 'configmaps "a" already exists'


def test_not_found_is_a_status_object(http):
    response = http.get(f"{CMS}/missing")
    assert response.status_code == 404
    assert response.json() == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": 'configmaps "missing" not found',
        "reason": "NotFound",
        "code": 404,
        "details": {"name": "missing", "kind": "configmaps"},
    }


def test_unknown_resource_is_404(http):
    assert http.get("/apis/example.com/v1/namespaces/default/nothings").status_code == 404


def test_create_in_missing_namespace_is_404(http):
    response = http.post("/api/v1/namespaces/nowhere/configmaps", json=cm("a"))
    assert response.status_code == 404
    assert response.json()["message"] == 'namespaces "nowhere" not found'


def test_put_replaces_and_checks_resource_version(http):
    created = http.post(CMS, json=cm("a", one="1", two="2")).json()
    replacement = cm("a", three="3")
    replacement["metadata"]["resourceVersion"] = created["metadata"]["resourceVersion"]
    response = http.put(f"{CMS}/a", json=replacement)
    assert response.status_code == 200
    assert response.json()["data"] == {"three": "3"}
    assert response.json()["metadata"]["uid"] == created["metadata"]["uid"]
    stale = http.put(f"{CMS}/a", json=replacement)  # same, now stale, resourceVersion
    assert stale.status_code == 409
    assert stale.json()["reason"] == "Conflict"
    assert "the object has been modified" in stale.json()["message"]


def test_patch_with_stale_resource_version_is_409(http):
    created = http.post(CMS, json=cm("a")).json()
    http.patch(f"{CMS}/a", json={"data": {"x": "1"}}, headers=MERGE)
    stale = {"metadata": {"resourceVersion": created["metadata"]["resourceVersion"]}, "data": {"y": "2"}}
    assert http.patch(f"{CMS}/a", json=stale, headers=MERGE).status_code == 409


def test_noop_patch_keeps_resource_version(http):
    created = http.post(CMS, json=cm("a", k="v")).json()
    same = http.patch(f"{CMS}/a", json={"data": {"k": "v"}}, headers=MERGE).json()
    assert same["metadata"]["resourceVersion"] == created["metadata"]["resourceVersion"]


def test_merge_patch_deletes_with_null(http):
    http.post(CMS, json=cm("a", keep="1", drop="2"))
    patched = http.patch(f"{CMS}/a", json={"data": {"drop": None, "new": "3"}}, headers=MERGE).json()
    assert patched["data"] == {"keep": "1", "new": "3"}


def test_json_patch(http):
    http.post(CMS, json=cm("a", k="v"))
    ops = [{"op": "add", "path": "/data/n", "value": "2"}, {"op": "remove", "path": "/data/k"}]
    assert http.patch(f"{CMS}/a", json=ops, headers=JSONPATCH).json()["data"] == {"n": "2"}
    failing = [{"op": "test", "path": "/data/n", "value": "other"}]
    response = http.patch(f"{CMS}/a", json=failing, headers=JSONPATCH)
    assert response.status_code == 422
    assert http.get(f"{CMS}/a").json()["data"] == {"n": "2"}


def test_unknown_patch_type_is_415(http):
    http.post(CMS, json=cm("a"))
    response = http.patch(f"{CMS}/a", json={}, headers={"Content-Type": "text/plain"})
    assert response.status_code == 415


def test_strategic_merge_patch_merges_named_lists(http):
    containers = [
        {
            "name": "main",
            "image": "app:1",
            "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
            "ports": [{"containerPort": 80}],
        },
        {"name": "side", "image": "side:1"},
    ]
    http.post(DEPLOYS, json=deployment("web", containers))
    patch = {
        "spec": {
            "template": {
                "spec": {
                    "containers": [
                        {
                            "name": "main",
                            "image": "app:2",
                            "env": [{"name": "B", "value": "3"}, {"name": "C", "value": "4"}],
                            "ports": [{"containerPort": 8080}],
                        },
                    ]
                }
            }
        }
    }
    patched = http.patch(f"{DEPLOYS}/web", json=patch, headers=SMP).json()
    result = patched["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in result] == ["main", "side"]
    assert result[0]["image"] == "app:2"
    assert result[0]["env"] == [
        {"name": "A", "value": "1"},
        {"name": "B", "value": "3"},
        {"name": "C", "value": "4"},
    ]
    assert result[0]["ports"] == [{"containerPort": 80}, {"containerPort": 8080}]
    delete = {"spec": {"template": {"spec": {"containers": [{"name": "side", "$patch": "delete"}]}}}}
    after = http.patch(f"{DEPLOYS}/web", json=delete, headers=SMP).json()
    assert [c["name"] for c in after["spec"]["template"]["spec"]["containers"]] == ["main"]


def test_strategic_merge_patch_is_refused_for_custom_resources(http, widget_crd, make_widget):
    http.post("/apis/example.com/v1/namespaces/default/widgets", json=make_widget("w"))
    response = http.patch(
        "/apis/example.com/v1/namespaces/default/widgets/w", json={"spec": {"size": 2}}, headers=SMP
    )
    assert response.status_code == 415


def test_generation_bumps_on_spec_changes_only(http):
    created = http.post(DEPLOYS, json=deployment("web", [{"name": "main", "image": "a"}])).json()
    assert created["metadata"]["generation"] == 1
    labelled = http.patch(f"{DEPLOYS}/web", json={"metadata": {"labels": {"x": "y"}}}, headers=MERGE).json()
    assert labelled["metadata"]["generation"] == 1
    status = http.patch(f"{DEPLOYS}/web/status", json={"status": {"replicas": 1}}, headers=MERGE).json()
    assert status["metadata"]["generation"] == 1 and status["status"] == {"replicas": 1}
    scaled = http.patch(f"{DEPLOYS}/web", json={"spec": {"replicas": 3}}, headers=MERGE).json()
    assert scaled["metadata"]["generation"] == 2


def test_status_subresource_separates_spec_and_status(http):
    http.post(DEPLOYS, json=deployment("web", [{"name": "main", "image": "a"}]))
    # A main-resource write cannot change status ...
    main = http.patch(
        f"{DEPLOYS}/web", json={"status": {"replicas": 9}, "spec": {"replicas": 2}}, headers=MERGE
    ).json()
    assert "status" not in main and main["spec"]["replicas"] == 2
    # ... and a status write cannot change spec or metadata.
    status = http.patch(
        f"{DEPLOYS}/web/status",
        json={"status": {"replicas": 2}, "spec": {"replicas": 7}, "metadata": {"labels": {"no": "no"}}},
        headers=MERGE,
    ).json()
    assert status["status"] == {"replicas": 2}
    assert status["spec"]["replicas"] == 2
    assert "no" not in status["metadata"]["labels"]
    assert http.get("/api/v1/namespaces/default/configmaps/x/status").status_code == 404


def test_status_in_create_is_dropped_when_subresource_is_on(http):
    body = deployment("web", [{"name": "main", "image": "a"}])
    body["status"] = {"replicas": 5}
    assert "status" not in http.post(DEPLOYS, json=body).json()


def test_dry_run_changes_nothing(http):
    dry = http.post(CMS, params={"dryRun": "All"}, json=cm("a", k="v"))
    assert dry.status_code == 201 and dry.json()["data"] == {"k": "v"}
    assert http.get(f"{CMS}/a").status_code == 404
    http.post(CMS, json=cm("a", k="v"))
    before = http.get(f"{CMS}/a").json()
    http.patch(f"{CMS}/a", params={"dryRun": "All"}, json={"data": {"k": "changed"}}, headers=MERGE)
    http.delete(f"{CMS}/a", params={"dryRun": "All"})
    assert http.get(f"{CMS}/a").json() == before


def test_server_side_apply_creates_then_merges(http):
    doc = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\ndata:\n  one: '1'\n  two: '2'\n"
    created = http.patch(f"{CMS}/a", params={"fieldManager": "me"}, content=doc, headers=APPLY)
    assert created.status_code == 201
    http.patch(f"{CMS}/a", json={"data": {"other": "x"}}, headers=MERGE)  # another writer's field
    doc2 = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\ndata:\n  one: '1'\n"
    updated = http.patch(f"{CMS}/a", params={"fieldManager": "me"}, content=doc2, headers=APPLY)
    assert updated.status_code == 200
    # the field this manager stopped applying is gone; the other writer's field stays
    assert updated.json()["data"] == {"one": "1", "other": "x"}
    missing_manager = http.patch(f"{CMS}/a", content=doc2, headers=APPLY)
    assert missing_manager.status_code == 400


def test_list_has_kind_api_version_and_resource_version(http):
    http.post(DEPLOYS, json=deployment("web", [{"name": "main", "image": "a"}]))
    listed = http.get(DEPLOYS).json()
    assert listed["kind"] == "DeploymentList"
    assert listed["apiVersion"] == "apps/v1"
    assert listed["metadata"]["resourceVersion"].isdigit()
    assert [item["metadata"]["name"] for item in listed["items"]] == ["web"]
    everywhere = http.get("/apis/apps/v1/deployments").json()
    assert len(everywhere["items"]) == 1


def test_list_pagination(http):
    for index in range(5):
        http.post(CMS, json=cm(f"c{index}"))
    first = http.get(CMS, params={"limit": 2}).json()
    assert [i["metadata"]["name"] for i in first["items"]] == ["c0", "c1"]
    assert first["metadata"]["remainingItemCount"] == 3
    second = http.get(CMS, params={"limit": 2, "continue": first["metadata"]["continue"]}).json()
    assert [i["metadata"]["name"] for i in second["items"]] == ["c2", "c3"]


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        ("tier=web", ["a", "b"]),
        ("tier==web", ["a", "b"]),
        ("tier!=web", ["c", "d"]),
        ("tier in (web,db)", ["a", "b", "c"]),
        ("tier notin (web)", ["c", "d"]),
        ("tier", ["a", "b", "c"]),
        ("!tier", ["d"]),
        ("tier=web,env=prod", ["a"]),
        ("tier in (web, db),!env", ["c"]),
    ],
)
def test_label_selectors(http, selector, expected):
    labels = {
        "a": {"tier": "web", "env": "prod"},
        "b": {"tier": "web", "env": "dev"},
        "c": {"tier": "db"},
        "d": {},
    }
    for name, lbls in labels.items():
        http.post(CMS, json={"metadata": {"name": name, "labels": lbls}})
    found = http.get(CMS, params={"labelSelector": selector}).json()["items"]
    assert [item["metadata"]["name"] for item in found] == expected


def test_bad_label_selector_is_400(http):
    assert http.get(CMS, params={"labelSelector": "a in ()"}).status_code == 400


def test_field_selectors(http):
    http.post("/api/v1/namespaces", json={"metadata": {"name": "other"}})
    http.post(CMS, json=cm("a"))
    http.post(CMS, json=cm("b"))
    http.post("/api/v1/namespaces/other/configmaps", json=cm("a"))
    by_name = http.get("/api/v1/configmaps", params={"fieldSelector": "metadata.name=a"}).json()["items"]
    assert sorted(i["metadata"]["namespace"] for i in by_name) == ["default", "other"]
    by_ns = http.get("/api/v1/configmaps", params={"fieldSelector": "metadata.namespace!=default"}).json()[
        "items"
    ]
    assert [(i["metadata"]["namespace"], i["metadata"]["name"]) for i in by_ns] == [("other", "a")]


def test_field_selector_on_unsupported_custom_field_is_400(http, widget_crd, make_widget):
    response = http.get("/apis/example.com/v1/widgets", params={"fieldSelector": "spec.size=1"})
    assert response.status_code == 400
    assert "field label not supported: spec.size" in response.json()["message"]


def test_scale_subresource(http):
    http.post(DEPLOYS, json=deployment("web", [{"name": "main", "image": "a"}], replicas=2))
    scale = http.get(f"{DEPLOYS}/web/scale").json()
    assert scale["kind"] == "Scale" and scale["spec"]["replicas"] == 2
    http.patch(f"{DEPLOYS}/web/scale", json={"spec": {"replicas": 4}}, headers=MERGE)
    assert http.get(f"{DEPLOYS}/web").json()["spec"]["replicas"] == 4


def test_namespaces_list_and_cluster_scope(http):
    names = [ns["metadata"]["name"] for ns in http.get("/api/v1/namespaces").json()["items"]]
    assert "default" in names and "kube-system" in names
    created = http.post("/api/v1/namespaces", json={"metadata": {"name": "team"}})
    assert created.status_code == 201
    assert created.json()["status"] == {"phase": "Active"}
    assert "namespace" not in created.json()["metadata"]
    assert http.get("/api/v1/namespaces/team").json()["metadata"]["name"] == "team"


def test_services_get_a_cluster_ip(http):
    svc = {"metadata": {"name": "web"}, "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}}
    created = http.post("/api/v1/namespaces/default/services", json=svc).json()
    assert created["spec"]["clusterIP"].startswith("10.96.")
    assert created["spec"]["ports"] == [{"port": 80, "protocol": "TCP", "targetPort": 80}]


def test_survives_garbage_input(http):
    response = http.post(CMS, content=b"{not json", headers={"Content-Type": "application/json"})
    assert response.status_code == 400
    assert http.post(CMS, json=["a list"]).status_code == 400
    assert http.get("/api/v1/namespaces").status_code == 200
