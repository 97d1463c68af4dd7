"""Names, labels, owner references and security settings shared by every built object, and the
shapes every component is built in: its Deployment, its HTTP Service, its signing-key Secret."""

from __future__ import annotations

import base64
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

SCRAPE_ANNOTATIONS = {
    "prometheus.io/scrape": "true",
    "prometheus.io/port": str(SERVING_PORT),
    "prometheus.io/path": "/metrics",
}
"""Every pod serves its metrics on the HTTP port: Prometheus finds them by these annotations."""


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


def _labels(owner: Owner, component: str, revision: str | None) -> dict[str, str]:
    labels = owner_labels(owner, component)
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
    meta: Object = {"name": name, "namespace": owner.namespace, "labels": _labels(owner, component, revision)}
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


def health_probes(startup_failures: int | None = None) -> Object:
    """The model server's probes (the router and the learner serve the same health endpoints);
    ``startup_failures`` adds a startup probe that gives a slow first load that many periods."""
    probes = {
        "readinessProbe": http_probe("/v2/health/ready", period=2, failure_threshold=3),
        "livenessProbe": http_probe("/v2/health/live", period=10, failure_threshold=3),
    }
    if startup_failures is not None:
        probes["startupProbe"] = http_probe("/v2/health/live", period=2, failure_threshold=startup_failures)
    return probes


def http_ports() -> list[Object]:
    return [{"name": "http", "containerPort": SERVING_PORT, "protocol": "TCP"}]


def rolling_update() -> Object:
    """Replace pods one at a time, never going below the wanted number of ready ones."""
    return {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}}


def deployment(
    owner: Owner,
    name: str,
    component: str,
    *,
    replicas: int,
    strategy: Object,
    pod_spec: Object,
    revision: str | None = None,
) -> Object:
    """The Deployment of one component; its pods carry the component's labels and are scraped."""
    pod_metadata = {"labels": _labels(owner, component, revision), "annotations": dict(SCRAPE_ANNOTATIONS)}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata(owner, name, component, revision=revision),
        "spec": {
            "replicas": replicas,
            "revisionHistoryLimit": 2,
            "selector": {"matchLabels": selector_labels(owner, component, revision)},
            "strategy": strategy,
            "template": {"metadata": pod_metadata, "spec": pod_spec},
        },
    }


def http_service(owner: Owner, name: str, component: str, revision: str | None = None) -> Object:
    """A ClusterIP Service on port 80 in front of the HTTP port of a component's pods."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(owner, name, component, revision=revision),
        "spec": {
            "type": "ClusterIP",
            "selector": selector_labels(owner, component, revision),
            "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}],
        },
    }


def key_secret(
    owner: Owner, name: str, component: str, field: str, key: str, *, min_bytes: int, what: str
) -> Object:
    """A Secret holding one signing key under ``field``; ``key`` comes from the caller (created
    once, never rotated by the operator), ``what`` names it in the error for a short one."""
    if len(key.encode()) < min_bytes:
        raise ValueError(f"{what}: needs at least {min_bytes} bytes")
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": metadata(owner, name, component),
        "type": "Opaque",
        "data": {field: base64.b64encode(key.encode()).decode()},
    }
