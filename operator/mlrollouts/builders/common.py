"""Names, labels, owner references and security settings shared by every built object."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mlrollouts.api.kinds import MODEL_DEPLOYMENT
from mlrollouts.core.names import (
    API_VERSION,
    COMPONENT_LABEL,
    MANAGED_BY_LABEL,
    NAME_LABEL,
    OWNER_LABEL,
    PART_OF_LABEL,
    PROJECT,
    REVISION_LABEL,
)

SERVING_PORT = 8080
DEFAULT_UPSTREAM_TEMPLATE = "http://{service}.{namespace}.svc:80"
"""Where a router reaches a Service: in-cluster DNS (the local playground passes its own)."""

Object = dict[str, Any]


@dataclass(frozen=True)
class Owner:
    """The resource that owns the built objects (its children are garbage-collected with it)."""

    name: str
    namespace: str
    uid: str = ""
    kind: str = MODEL_DEPLOYMENT.kind
    api_version: str = API_VERSION

    @property
    def label(self) -> str:
        return f"{self.kind}.{self.name}"

    def reference(self) -> Object:
        return {
            "apiVersion": self.api_version,
            "kind": self.kind,
            "name": self.name,
            "uid": self.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }


def revision_name(owner_name: str, revision: str) -> str:
    return f"{owner_name}-{revision}"


def owner_labels(owner: Owner, component: str) -> dict[str, str]:
    return {
        MANAGED_BY_LABEL: PROJECT,
        OWNER_LABEL: owner.label,
        NAME_LABEL: owner.name,
        PART_OF_LABEL: PROJECT,
        COMPONENT_LABEL: component,
    }


def selector_labels(owner: Owner, component: str, revision: str | None = None) -> dict[str, str]:
    """The labels a selector matches on; a subset of the pod labels, stable for the object's life."""
    labels = {OWNER_LABEL: owner.label, COMPONENT_LABEL: component}
    if revision is not None:
        labels[REVISION_LABEL] = revision
    return labels


def metadata(
    owner: Owner,
    name: str,
    component: str,
    revision: str | None = None,
    annotations: Mapping[str, str] | None = None,
) -> Object:
    labels = owner_labels(owner, component)
    if revision is not None:
        labels[REVISION_LABEL] = revision
    meta: Object = {"name": name, "namespace": owner.namespace, "labels": labels}
    if annotations:
        meta["annotations"] = dict(annotations)
    if owner.uid:
        meta["ownerReferences"] = [owner.reference()]
    return meta


def pod_security_context() -> Object:
    return {
        "runAsNonRoot": True,
        "runAsUser": 65532,
        "runAsGroup": 65532,
        "fsGroup": 65532,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def container_security_context() -> Object:
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "privileged": False,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def tmp_volume() -> tuple[Object, Object]:
    """A writable emptyDir for /tmp: the root filesystem is read-only."""
    return (
        {"name": "tmp", "emptyDir": {"sizeLimit": "256Mi"}},
        {"name": "tmp", "mountPath": "/tmp"},
    )


def http_probe(path: str, period: int, failure_threshold: int, initial_delay: int = 0) -> Object:
    return {
        "httpGet": {"path": path, "port": "http"},
        "periodSeconds": period,
        "failureThreshold": failure_threshold,
        "initialDelaySeconds": initial_delay,
        "timeoutSeconds": 2,
    }
