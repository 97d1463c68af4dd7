"""OpenAPI v3 documents of the emulator's resource types, for ``kubectl explain``.

``/openapi/v3`` lists one document per group/version; each document names every kind of that
group/version under ``components.schemas`` with its ``x-kubernetes-group-version-kind``. A custom
resource's schema is its CRD's ``openAPIV3Schema``; a built-in kind, whose full schema the emulator
does not hold, is described by its top-level fields only (its ``spec`` and ``status`` are open
objects), which is what the server itself checks of it.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from .resources import Registry, ResourceType

_OBJECT_META = {
    "type": "object",
    "description": "Standard object's metadata: name, namespace, labels, annotations, ownerReferences.",
    "x-kubernetes-preserve-unknown-fields": True,
}


def group_version_path(group: str, version: str) -> str:
    """The document's path under ``/openapi/v3/`` (``api/v1``, ``apis/apps/v1``)."""
    return f"apis/{group}/{version}" if group else f"api/{version}"


def schema_name(rt: ResourceType) -> str:
    """The component name Kubernetes gives a kind: the group reversed (``io.mlrollouts.v1alpha1.Kind``);
    built-in groups under ``io.k8s.api`` (``io.k8s.api.apps.v1.Deployment``)."""
    if rt.is_custom:
        return ".".join([*reversed(rt.group.split(".")), rt.version, rt.kind])
    group = rt.group.split(".")[0] if rt.group else "core"
    return f"io.k8s.api.{group}.{rt.version}.{rt.kind}"


def _builtin_schema(rt: ResourceType) -> dict[str, Any]:
    properties: dict[str, Any] = {
        "apiVersion": {"type": "string", "description": "The versioned schema of this object."},
        "kind": {"type": "string", "description": "The REST resource this object represents."},
        "metadata": _OBJECT_META,
    }
    for part, what in (("spec", "desired state"), ("status", "observed state")):
        properties[part] = {
            "type": "object",
            "description": f"The {what} of the {rt.kind}.",
            "x-kubernetes-preserve-unknown-fields": True,
        }
    return {"type": "object", "description": f"{rt.kind} ({rt.api_version}).", "properties": properties}


def kind_schema(rt: ResourceType) -> dict[str, Any]:
    schema = dict(rt.schema) if rt.schema else _builtin_schema(rt)
    if rt.schema:
        properties = dict(schema.get("properties") or {})
        properties.setdefault("metadata", _OBJECT_META)
        schema["properties"] = properties
    schema["x-kubernetes-group-version-kind"] = [{"group": rt.group, "version": rt.version, "kind": rt.kind}]
    return schema


def _read_path(rt: ResourceType) -> tuple[str, dict[str, Any]]:
    """The path of one object, with the GET operation that names its kind and schema: how clients
    (``kubectl explain``) find a resource's schema in the document."""
    prefix = f"/{group_version_path(rt.group, rt.version)}"
    scope = "/namespaces/{namespace}" if rt.namespaced else ""
    operation = {
        "operationId": f"read{rt.kind}",
        "x-kubernetes-action": "get",
        "x-kubernetes-group-version-kind": {"group": rt.group, "version": rt.version, "kind": rt.kind},
        "responses": {
            "200": {
                "description": "OK",
                "content": {
                    "application/json": {"schema": {"$ref": f"#/components/schemas/{schema_name(rt)}"}}
                },
            }
        },
    }
    return f"{prefix}{scope}/{rt.plural}/{{name}}", {"get": operation}


def document(registry: Registry, group: str, version: str) -> dict[str, Any] | None:
    """The OpenAPI v3 document of one group/version; None when the emulator serves no such version."""
    types = [rt for rt in registry.all() if rt.group == group and rt.version == version]
    if not types:
        return None
    return {
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": group_version_path(group, version)},
        "paths": dict(_read_path(rt) for rt in types),
        "components": {"schemas": {schema_name(rt): kind_schema(rt) for rt in types}},
    }


def _digest(doc: dict[str, Any]) -> str:
    return hashlib.sha512(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:32].upper()


def index(registry: Registry) -> dict[str, Any]:
    """``/openapi/v3``: every group/version's document, with a hash that changes with its content."""
    paths = {}
    for group, version in sorted({(rt.group, rt.version) for rt in registry.all()}):
        doc = document(registry, group, version)
        assert doc is not None
        path = group_version_path(group, version)
        paths[path] = {"serverRelativeURL": f"/openapi/v3/{path}?hash={_digest(doc)}"}
    return {"paths": paths}


def serve(registry: Registry, path: str) -> dict[str, Any] | None:
    """The answer to ``GET path`` (``/openapi/v3`` or ``/openapi/v3/<group/version path>``); None: 404."""
    rest = path.removeprefix("/openapi/v3").strip("/")
    if not rest:
        return index(registry)
    parts = rest.split("/")
    if parts[0] == "api" and len(parts) == 2:
        return document(registry, "", parts[1])
    if parts[0] == "apis" and len(parts) == 3:
        return document(registry, parts[1], parts[2])
    return None
