"""The mlserving router in front of the revisions: its route-table ConfigMap, RBAC, Deployment, Service,
and the Secret ``<name>-router-key`` every replica signs response ids with, so feedback sent to any
replica is credited to the variant that answered."""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any

from mlrollouts.builders.common import (
    SERVING_PORT,
    Object,
    Owner,
    container_security_context,
    http_probe,
    metadata,
    pod_security_context,
    selector_labels,
    tmp_volume,
)
from mlrollouts.builders.serving import DEFAULT_SERVING_IMAGE

ROUTER_COMPONENT = "router"
SIGNING_KEY_ENV = "MLROUTER_SIGNING_KEY"
SIGNING_KEY_FIELD = "signing-key"
SIGNING_KEY_MIN_BYTES = 16
DEFAULT_ROUTER_RESOURCES: dict[str, Any] = {
    "requests": {"cpu": "100m", "memory": "128Mi"},
    "limits": {"memory": "512Mi"},
}


def route_table_name(owner: Owner) -> str:
    return f"{owner.name}-routes"


def router_name(owner: Owner) -> str:
    return f"{owner.name}-router"


def signing_key_secret_name(owner: Owner) -> str:
    return f"{owner.name}-router-key"


def signing_key_secret(owner: Owner, key: str) -> Object:
    """The router replicas' shared id-signing key; ``key`` comes from the caller (created once,
    never rotated by the operator)."""
    if len(key.encode()) < SIGNING_KEY_MIN_BYTES:
        raise ValueError(f"signing key: needs at least {SIGNING_KEY_MIN_BYTES} bytes")
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": metadata(owner, signing_key_secret_name(owner), ROUTER_COMPONENT),
        "type": "Opaque",
        "data": {SIGNING_KEY_FIELD: base64.b64encode(key.encode()).decode()},
    }


def route_table_configmap(owner: Owner, data: Mapping[str, str]) -> Object:
    """The ConfigMap the router watches; ``data`` is the serialised route table under its data key."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata(owner, route_table_name(owner), ROUTER_COMPONENT),
        "data": dict(data),
    }


def router_service_account(owner: Owner) -> Object:
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": metadata(owner, router_name(owner), ROUTER_COMPONENT),
        "automountServiceAccountToken": True,
    }


def router_role(owner: Owner) -> Object:
    """Read access to its own route-table ConfigMap only."""
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": metadata(owner, router_name(owner), ROUTER_COMPONENT),
        "rules": [
            {
                "apiGroups": [""],
                "resources": ["configmaps"],
                "resourceNames": [route_table_name(owner)],
                "verbs": ["get", "list", "watch"],
            }
        ],
    }


def router_role_binding(owner: Owner) -> Object:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": metadata(owner, router_name(owner), ROUTER_COMPONENT),
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": router_name(owner)},
        "subjects": [{"kind": "ServiceAccount", "name": router_name(owner), "namespace": owner.namespace}],
    }


def router_deployment(
    owner: Owner,
    image: str = DEFAULT_SERVING_IMAGE,
    replicas: int = 2,
    resources: Mapping[str, Any] | None = None,
) -> Object:
    """The router pods; they read the signing key from ``<name>-router-key`` and refuse to start
    without it (a per-replica random key would lose feedback sent to another replica)."""
    volume, mount = tmp_volume()
    pod_meta = metadata(
        owner,
        router_name(owner),
        ROUTER_COMPONENT,
        annotations={
            "prometheus.io/scrape": "true",
            "prometheus.io/port": str(SERVING_PORT),
            "prometheus.io/path": "/metrics",
        },
    )
    for key in ("name", "namespace", "ownerReferences"):
        pod_meta.pop(key, None)
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata(owner, router_name(owner), ROUTER_COMPONENT),
        "spec": {
            "replicas": replicas,
            "revisionHistoryLimit": 2,
            "selector": {"matchLabels": selector_labels(owner, ROUTER_COMPONENT)},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "template": {
                "metadata": pod_meta,
                "spec": {
                    "serviceAccountName": router_name(owner),
                    "securityContext": pod_security_context(),
                    "containers": [
                        {
                            "name": "router",
                            "image": image,
                            "command": ["mlserving"],
                            "args": [
                                "route",
                                "--configmap",
                                f"{owner.namespace}/{route_table_name(owner)}",
                                "--port",
                                str(SERVING_PORT),
                            ],
                            "ports": [{"name": "http", "containerPort": SERVING_PORT, "protocol": "TCP"}],
                            "env": signing_key_env(owner),
                            "readinessProbe": http_probe("/v2/health/ready", period=2, failure_threshold=3),
                            "livenessProbe": http_probe("/v2/health/live", period=10, failure_threshold=3),
                            "resources": dict(resources or DEFAULT_ROUTER_RESOURCES),
                            "securityContext": container_security_context(),
                            "volumeMounts": [mount],
                        }
                    ],
                    "volumes": [volume],
                },
            },
        },
    }


def signing_key_env(owner: Owner) -> list[dict[str, Any]]:
    return [
        {
            "name": SIGNING_KEY_ENV,
            "valueFrom": {"secretKeyRef": {"name": signing_key_secret_name(owner), "key": SIGNING_KEY_FIELD}},
        },
        {"name": "MLROUTER_REQUIRE_SIGNING_KEY", "value": "1"},
    ]


def router_service(owner: Owner) -> Object:
    """Entry point ``<name>`` of the Router provider: the router pods."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(owner, owner.name, ROUTER_COMPONENT),
        "spec": {
            "type": "ClusterIP",
            "selector": selector_labels(owner, ROUTER_COMPONENT),
            "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}],
        },
    }
