"""The mlserving router in front of the revisions: its route-table ConfigMap, RBAC, Deployment, Service,
and the Secret ``<name>-router-key`` every replica signs response ids with, so feedback sent to any
replica is credited to the variant that answered."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mlrollouts.builders import common
from mlrollouts.builders.common import SERVING_PORT, Object, Owner
from mlrollouts.builders.serving import DEFAULT_SERVING_IMAGE
from mlserving.router.table import RouteTable

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
    return common.key_secret(
        owner,
        signing_key_secret_name(owner),
        ROUTER_COMPONENT,
        SIGNING_KEY_FIELD,
        key,
        min_bytes=SIGNING_KEY_MIN_BYTES,
        what="signing key",
    )


def route_table_configmap(owner: Owner, data: Mapping[str, str]) -> Object:
    """The ConfigMap the router watches; ``data`` is the serialised route table under its data key."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": common.metadata(owner, route_table_name(owner), ROUTER_COMPONENT),
        "data": dict(data),
    }


def route_configmap(owner: Owner, table: RouteTable) -> Object:
    """The ConfigMap holding ``table``, serialised as the router reads it."""
    return route_table_configmap(owner, table.to_configmap_data())


def router_service_account(owner: Owner) -> Object:
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": common.metadata(owner, router_name(owner), ROUTER_COMPONENT),
        "automountServiceAccountToken": True,
    }


def router_role(owner: Owner) -> Object:
    """Read access to its own route-table ConfigMap only."""
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": common.metadata(owner, router_name(owner), ROUTER_COMPONENT),
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
        "metadata": common.metadata(owner, router_name(owner), ROUTER_COMPONENT),
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
    volume, mount = common.tmp_volume()
    container = {
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
        "ports": common.http_ports(),
        "env": signing_key_env(owner),
        **common.health_probes(),
        "resources": dict(resources or DEFAULT_ROUTER_RESOURCES),
        "securityContext": common.container_security_context(),
        "volumeMounts": [mount],
    }
    pod_spec = {
        "serviceAccountName": router_name(owner),
        "securityContext": common.pod_security_context(),
        "containers": [container],
        "volumes": [volume],
    }
    return common.deployment(
        owner,
        router_name(owner),
        ROUTER_COMPONENT,
        replicas=replicas,
        strategy=common.rolling_update(),
        pod_spec=pod_spec,
    )


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
    return common.http_service(owner, owner.name, ROUTER_COMPONENT)


def router_objects(owner: Owner, image: str, replicas: int) -> list[Object]:
    """Everything of a router entry point except the route table and the key (they change
    separately): its ServiceAccount, Role and RoleBinding, Deployment and Service."""
    return [
        router_service_account(owner),
        router_role(owner),
        router_role_binding(owner),
        router_deployment(owner, image=image, replicas=replicas),
        router_service(owner),
    ]
