"""The emulator's OpenAPI v3 documents: what `kubectl explain` looks up in them."""

from __future__ import annotations

from mlrollouts.api.crd import all_crds
from mlrollouts.local.apiserver import openapi
from mlrollouts.local.apiserver.resources import Registry


def registry_with_crds() -> Registry:
    registry = Registry()
    for crd in all_crds():
        registry.register_crd(crd)
    return registry


def test_the_index_names_one_document_per_group_version_with_a_content_hash() -> None:
    registry = registry_with_crds()
    paths = openapi.serve(registry, "/openapi/v3")["paths"]
    assert {"api/v1", "apis/apps/v1", "apis/mlrollouts.io/v1alpha1"} <= set(paths)
    before = paths["apis/mlrollouts.io/v1alpha1"]["serverRelativeURL"]
    assert before.startswith("/openapi/v3/apis/mlrollouts.io/v1alpha1?hash=")
    crd = next(c for c in all_crds() if c["spec"]["names"]["kind"] == "Experiment")
    registry.unregister_crd(crd["metadata"]["name"])
    after = openapi.serve(registry, "/openapi/v3")["paths"]["apis/mlrollouts.io/v1alpha1"][
        "serverRelativeURL"
    ]
    assert after != before


def test_a_custom_kind_is_found_from_its_object_path_and_carries_its_crd_schema() -> None:
    doc = openapi.serve(registry_with_crds(), "/openapi/v3/apis/mlrollouts.io/v1alpha1")
    get = doc["paths"]["/apis/mlrollouts.io/v1alpha1/namespaces/{namespace}/modeldeployments/{name}"]["get"]
    gvk = {"group": "mlrollouts.io", "version": "v1alpha1", "kind": "ModelDeployment"}
    assert get["x-kubernetes-group-version-kind"] == gvk
    schema = doc["components"]["schemas"]["io.mlrollouts.v1alpha1.ModelDeployment"]
    assert schema["x-kubernetes-group-version-kind"] == [gvk]
    assert "steps" in schema["properties"]["spec"]["properties"]["rollout"]["properties"]


def test_a_built_in_kind_has_its_top_level_fields_and_unknown_versions_are_absent() -> None:
    registry = Registry()
    doc = openapi.serve(registry, "/openapi/v3/api/v1")
    pod = doc["components"]["schemas"]["io.k8s.api.core.v1.Pod"]
    assert set(pod["properties"]) == {"apiVersion", "kind", "metadata", "spec", "status"}
    assert "/api/v1/namespaces/{namespace}/pods/{name}" in doc["paths"]
    assert "/api/v1/namespaces/{name}" in doc["paths"]  # cluster-scoped: no namespace segment
    assert openapi.serve(registry, "/openapi/v3/apis/nothing.example/v1") is None
    assert openapi.serve(registry, "/openapi/v3/apis/apps") is None
