"""CRDs register resources; custom resources are pruned, defaulted and validated like a real API server."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.integration

MERGE = {"Content-Type": "application/merge-patch+json"}
CRDS = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
WIDGETS = "/apis/example.com/v1/namespaces/default/widgets"


def test_crd_registers_discovery_and_is_established(http, widget_crd):
    assert {"type": "Established", "status": "True"}.items() <= {
        k: v for c in widget_crd["status"]["conditions"] if c["type"] == "Established" for k, v in c.items()
    }.items()
    groups = {g["name"]: g for g in http.get("/apis").json()["groups"]}
    assert groups["example.com"]["preferredVersion"] == {"groupVersion": "example.com/v1", "version": "v1"}
    resources = {r["name"]: r for r in http.get("/apis/example.com/v1").json()["resources"]}
    assert resources["widgets"]["kind"] == "Widget"
    assert resources["widgets"]["namespaced"] is True
    assert resources["widgets"]["shortNames"] == ["wdg"]
    assert resources["widgets"]["categories"] == ["things"]
    assert "widgets/status" in resources
    assert http.get("/apis/example.com").json()["name"] == "example.com"


def test_crd_deletion_unregisters_the_resource(http, widget_crd, make_widget):
    http.post(WIDGETS, json=make_widget("w"))
    mark = http.get(WIDGETS).json()["metadata"]["resourceVersion"]
    params = {"watch": "true", "resourceVersion": mark, "timeoutSeconds": "10"}
    with http.stream("GET", WIDGETS, params=params) as watch:
        assert http.delete(f"{CRDS}/widgets.example.com").status_code == 200
        event = json.loads(next(watch.iter_lines()))
    assert (event["type"], event["object"]["metadata"]["name"]) == ("DELETED", "w")
    assert http.get(WIDGETS).status_code == 404
    assert "example.com" not in {g["name"] for g in http.get("/apis").json()["groups"]}


def test_crd_with_a_broken_cel_rule_is_rejected(http, widget_crd_body):
    crd = widget_crd_body
    spec_schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    spec_schema["x-kubernetes-validations"] = [{"rule": "self.size <", "message": "x"}]
    response = http.post(CRDS, json=crd)
    assert response.status_code == 422
    assert "x-kubernetes-validations[0].rule" in response.json()["message"]
    assert "compilation failed" in response.json()["message"]


def test_crd_name_must_match_plural_and_group(http, widget_crd_body):
    crd = widget_crd_body
    crd["metadata"]["name"] = "gadgets.example.com"
    response = http.post(CRDS, json=crd)
    assert response.status_code == 422
    assert 'metadata.name: Invalid value: "gadgets.example.com"' in response.json()["message"]


def test_pruning_and_defaults(http, widget_crd, make_widget):
    body = make_widget("w", unknown="dropped")
    body["spec"]["size"] = 2
    body["topLevelJunk"] = 1
    created = http.post(WIDGETS, json=body).json()
    assert created["spec"] == {"size": 2, "big": False}
    assert "topLevelJunk" not in created


def test_strict_field_validation_rejects_unknown_fields(http, widget_crd, make_widget):
    response = http.post(WIDGETS, params={"fieldValidation": "Strict"}, json=make_widget("w", colour="red"))
    assert response.status_code == 400
    assert 'unknown field "spec.colour"' in response.json()["message"]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"size": None}, "spec.size: Required value"),
        (
            {"size": "three"},
            'spec.size: Invalid value: "string": spec.size in body must be of type integer: "string"',
        ),
        (
            {"size": 101, "big": True},
            "spec.size: Invalid value: 101: spec.size in body should be less than or equal to 100",
        ),
        (
            {"size": -1},
            "spec.size: Invalid value: -1: spec.size in body should be greater than or equal to 0",
        ),
        ({"color": "green"}, 'spec.color: Unsupported value: "green": supported values: "red", "blue"'),
        ({"tags": ["a", "b", "c"]}, "spec.tags: Too many: 3: must have at most 2 items"),
        ({"size": 11}, 'spec: Invalid value: "object": size above 10 needs big'),
        (
            {"steps": [{"weight": 10}, {"weight": 150}]},
            "spec.steps[1].weight: Invalid value: 150: spec.steps[1].weight in body should be less than or equal to 100",
        ),
        (
            {"steps": [{"weight": 50}, {"weight": 10}]},
            'spec.steps: Invalid value: "array": step weights must increase',
        ),
    ],
)
def test_validation_errors_name_the_field(http, widget_crd, make_widget, spec, message):
    body = make_widget("w", **spec)
    body["spec"] = {k: v for k, v in body["spec"].items() if v is not None}
    response = http.post(WIDGETS, json=body)
    assert response.status_code == 422, response.text
    status = response.json()
    assert status["reason"] == "Invalid"
    assert status["message"].startswith('Widget.example.com "w" is invalid: ')
    assert message in status["message"]
    assert status["details"]["causes"][0]["field"] in message
    assert http.get(f"{WIDGETS}/w").status_code == 404


def test_several_errors_are_listed_together(http, widget_crd, make_widget):
    response = http.post(WIDGETS, json=make_widget("w", size=-1, color="green"))
    message = response.json()["message"]
    assert "is invalid: [" in message and "spec.size" in message and "spec.color" in message
    assert len(response.json()["details"]["causes"]) == 2


def test_transition_rules_see_old_self(http, widget_crd, make_widget):
    http.post(WIDGETS, json=make_widget("w", immutable="first"))
    response = http.patch(f"{WIDGETS}/w", json={"spec": {"immutable": "second"}}, headers=MERGE)
    assert response.status_code == 422
    assert 'spec.immutable: Invalid value: "second": immutable is immutable' in response.json()["message"]
    assert http.patch(f"{WIDGETS}/w", json={"spec": {"size": 2}}, headers=MERGE).status_code == 200


def test_status_subresource_of_custom_resources(http, widget_crd, make_widget):
    body = make_widget("w")
    body["status"] = {"phase": "ignored"}
    created = http.post(WIDGETS, json=body).json()
    assert "status" not in created and created["metadata"]["generation"] == 1
    status = http.patch(
        f"{WIDGETS}/w/status", json={"status": {"phase": "Ready"}, "spec": {"size": 9}}, headers=MERGE
    )
    assert status.json()["status"] == {"phase": "Ready"} and status.json()["spec"]["size"] == 1
    assert status.json()["metadata"]["generation"] == 1
    spec = http.patch(
        f"{WIDGETS}/w", json={"spec": {"size": 5}, "status": {"phase": "Nope"}}, headers=MERGE
    ).json()
    assert spec["metadata"]["generation"] == 2 and spec["status"] == {"phase": "Ready"}


def test_put_of_a_custom_resource_needs_a_resource_version(http, widget_crd, make_widget):
    http.post(WIDGETS, json=make_widget("w"))
    response = http.put(f"{WIDGETS}/w", json=make_widget("w", size=2))
    assert response.status_code == 422
    assert "metadata.resourceVersion" in response.json()["message"]


def test_table_with_printer_columns(http, widget_crd, make_widget):
    http.post(WIDGETS, json=make_widget("w", size=7))
    http.patch(f"{WIDGETS}/w/status", json={"status": {"phase": "Ready"}}, headers=MERGE)
    accept = {"Accept": "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"}
    table = http.get(WIDGETS, headers=accept).json()
    assert table["kind"] == "Table" and table["apiVersion"] == "meta.k8s.io/v1"
    assert [c["name"] for c in table["columnDefinitions"]] == ["Name", "Size", "Phase", "Age"]
    cells = table["rows"][0]["cells"]
    assert cells[:3] == ["w", 7, "Ready"]
    assert cells[3].endswith("s")
    assert table["rows"][0]["object"]["kind"] == "PartialObjectMetadata"
    single = http.get(f"{WIDGETS}/w", headers=accept).json()
    assert single["kind"] == "Table" and len(single["rows"]) == 1


def test_server_side_apply_of_custom_resources(http, widget_crd):
    doc = "apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w}\nspec: {size: 3, color: red}\n"
    params = {"fieldManager": "gitops"}
    headers = {"Content-Type": "application/apply-patch+yaml"}
    assert http.patch(f"{WIDGETS}/w", params=params, content=doc, headers=headers).status_code == 201
    doc2 = "apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w}\nspec: {size: 4}\n"
    updated = http.patch(f"{WIDGETS}/w", params=params, content=doc2, headers=headers).json()
    assert updated["spec"] == {"size": 4, "big": False}
    invalid = "apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w}\nspec: {size: 400}\n"
    assert http.patch(f"{WIDGETS}/w", params=params, content=invalid, headers=headers).status_code == 422


def test_cluster_scoped_and_multi_version_crds(http, widget_crd_body):
    crd = widget_crd_body
    crd["metadata"]["name"] = "gadgets.example.com"
    crd["spec"]["names"] = {"plural": "gadgets", "singular": "gadget", "kind": "Gadget"}
    crd["spec"]["scope"] = "Cluster"
    v1 = crd["spec"]["versions"][0]
    v2 = {**v1, "name": "v2", "storage": False}
    crd["spec"]["versions"] = [v1, v2]
    assert http.post(CRDS, json=crd).status_code == 201
    body = {"apiVersion": "example.com/v1", "kind": "Gadget", "metadata": {"name": "g"}, "spec": {"size": 1}}
    created = http.post("/apis/example.com/v1/gadgets", json=body)
    assert created.status_code == 201 and "namespace" not in created.json()["metadata"]
    assert http.get("/apis/example.com/v1/namespaces/default/gadgets").status_code == 404
    through_v2 = http.get("/apis/example.com/v2/gadgets/g").json()
    assert through_v2["apiVersion"] == "example.com/v2" and through_v2["spec"]["size"] == 1
    listed = http.get("/apis/example.com/v2/gadgets").json()
    assert listed["apiVersion"] == "example.com/v2" and listed["items"][0]["apiVersion"] == "example.com/v2"
    versions = [v["version"] for v in http.get("/apis/example.com").json()["versions"]]
    assert versions == ["v1", "v2"]
