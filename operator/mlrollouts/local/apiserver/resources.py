"""The resource types the emulator serves: built-in Kubernetes kinds and the ones CRDs register."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator
from typing import Any

ALL_VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")

# Resources whose objects carry metadata.generation (they have a desired state that controllers observe).
_NO_GENERATION = {
    ("", "configmaps"),
    ("", "secrets"),
    ("", "events"),
    ("", "endpoints"),
    ("", "namespaces"),
    ("", "serviceaccounts"),
    ("", "pods"),
    ("events.k8s.io", "events"),
    ("discovery.k8s.io", "endpointslices"),
    ("coordination.k8s.io", "leases"),
}


@dataclasses.dataclass(frozen=True)
class ResourceType:
    """One servable resource: where it lives in the URL space and how its objects behave."""

    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool = True
    singular: str = ""
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    subresources: tuple[str, ...] = ()
    # CRD-only parts: the version's schema and printer columns, and the CRD's name.
    schema: dict[str, Any] | None = None
    printer_columns: tuple[dict[str, Any], ...] = ()
    crd: str | None = None
    served_versions: tuple[str, ...] = ()

    @property
    def key(self) -> tuple[str, str]:
        """Storage key: objects are shared by all versions of a group/resource."""
        return (self.group, self.plural)

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def group_resource(self) -> str:
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def qualified_kind(self) -> str:
        return f"{self.kind}.{self.group}" if self.group else self.kind

    @property
    def has_status(self) -> bool:
        return "status" in self.subresources

    @property
    def has_generation(self) -> bool:
        return self.key not in _NO_GENERATION

    @property
    def is_custom(self) -> bool:
        return self.crd is not None

    def singular_name(self) -> str:
        return self.singular or self.kind.lower()

    def discovery_entries(self) -> Iterator[dict[str, Any]]:
        """Entries of this resource (and its subresources) in an ``APIResourceList``."""
        entry: dict[str, Any] = {
            "name": self.plural,
            "singularName": self.singular_name(),
            "namespaced": self.namespaced,
            "kind": self.kind,
            "verbs": list(ALL_VERBS),
        }
        if self.short_names:
            entry["shortNames"] = list(self.short_names)
        if self.categories:
            entry["categories"] = list(self.categories)
        yield entry
        for sub in self.subresources:
            sub_entry: dict[str, Any] = {
                "name": f"{self.plural}/{sub}",
                "singularName": "",
                "namespaced": self.namespaced,
                "kind": self.kind,
                "verbs": ["get", "patch", "update"],
            }
            if sub == "scale":
                sub_entry.update(group="autoscaling", version="v1", kind="Scale")
            yield sub_entry


def aggregated_entry(rt: ResourceType) -> dict[str, Any]:
    """This resource in aggregated discovery (``apidiscovery.k8s.io/v2`` ``APIResourceDiscovery``)."""
    entry: dict[str, Any] = {
        "resource": rt.plural,
        "responseKind": {"group": rt.group, "version": rt.version, "kind": rt.kind},
        "scope": "Namespaced" if rt.namespaced else "Cluster",
        "singularResource": rt.singular_name(),
        "verbs": list(ALL_VERBS),
    }
    if rt.short_names:
        entry["shortNames"] = list(rt.short_names)
    if rt.categories:
        entry["categories"] = list(rt.categories)
    subresources = []
    for sub in rt.subresources:
        kind = (
            {"group": "autoscaling", "version": "v1", "kind": "Scale"}
            if sub == "scale"
            else entry["responseKind"]
        )
        subresources.append({"subresource": sub, "responseKind": kind, "verbs": ["get", "patch", "update"]})
    if subresources:
        entry["subresources"] = subresources
    return entry


def _rt(
    group: str,
    version: str,
    plural: str,
    kind: str,
    *,
    namespaced: bool = True,
    short: Iterable[str] = (),
    cats: Iterable[str] = (),
    subs: Iterable[str] = (),
) -> ResourceType:
    return ResourceType(
        group=group,
        version=version,
        plural=plural,
        kind=kind,
        namespaced=namespaced,
        short_names=tuple(short),
        categories=tuple(cats),
        subresources=tuple(subs),
    )


BUILTIN_RESOURCES: tuple[ResourceType, ...] = (
    # core/v1
    _rt("", "v1", "namespaces", "Namespace", namespaced=False, short=["ns"], subs=["status"]),
    _rt("", "v1", "pods", "Pod", short=["po"], cats=["all"], subs=["status"]),
    _rt("", "v1", "services", "Service", short=["svc"], cats=["all"], subs=["status"]),
    _rt("", "v1", "configmaps", "ConfigMap", short=["cm"]),
    _rt("", "v1", "endpoints", "Endpoints", short=["ep"]),
    _rt("", "v1", "events", "Event", short=["ev"]),
    _rt("", "v1", "secrets", "Secret"),
    _rt("", "v1", "serviceaccounts", "ServiceAccount", short=["sa"]),
    _rt("", "v1", "nodes", "Node", namespaced=False, short=["no"], subs=["status"]),
    _rt("", "v1", "persistentvolumeclaims", "PersistentVolumeClaim", short=["pvc"], subs=["status"]),
    # apps/v1
    _rt("apps", "v1", "deployments", "Deployment", short=["deploy"], cats=["all"], subs=["status", "scale"]),
    _rt("apps", "v1", "replicasets", "ReplicaSet", short=["rs"], cats=["all"], subs=["status", "scale"]),
    _rt("apps", "v1", "statefulsets", "StatefulSet", short=["sts"], cats=["all"], subs=["status", "scale"]),
    _rt("apps", "v1", "daemonsets", "DaemonSet", short=["ds"], cats=["all"], subs=["status"]),
    _rt("apps", "v1", "controllerrevisions", "ControllerRevision"),
    # batch, autoscaling, policy
    _rt("batch", "v1", "jobs", "Job", cats=["all"], subs=["status"]),
    _rt("batch", "v1", "cronjobs", "CronJob", short=["cj"], cats=["all"], subs=["status"]),
    _rt(
        "autoscaling",
        "v2",
        "horizontalpodautoscalers",
        "HorizontalPodAutoscaler",
        short=["hpa"],
        cats=["all"],
        subs=["status"],
    ),
    _rt("policy", "v1", "poddisruptionbudgets", "PodDisruptionBudget", short=["pdb"], subs=["status"]),
    # networking
    _rt("networking.k8s.io", "v1", "ingresses", "Ingress", short=["ing"], subs=["status"]),
    _rt("networking.k8s.io", "v1", "networkpolicies", "NetworkPolicy", short=["netpol"]),
    _rt("networking.k8s.io", "v1", "ingressclasses", "IngressClass", namespaced=False),
    _rt("discovery.k8s.io", "v1", "endpointslices", "EndpointSlice"),
    _rt("coordination.k8s.io", "v1", "leases", "Lease"),
    _rt("events.k8s.io", "v1", "events", "Event", short=["ev"]),
    # CRDs themselves
    _rt(
        "apiextensions.k8s.io",
        "v1",
        "customresourcedefinitions",
        "CustomResourceDefinition",
        namespaced=False,
        short=["crd", "crds"],
        cats=["api-extensions"],
        subs=["status"],
    ),
    # admission webhooks (called on writes: see .admission)
    _rt(
        "admissionregistration.k8s.io",
        "v1",
        "validatingwebhookconfigurations",
        "ValidatingWebhookConfiguration",
        namespaced=False,
    ),
    _rt(
        "admissionregistration.k8s.io",
        "v1",
        "mutatingwebhookconfigurations",
        "MutatingWebhookConfiguration",
        namespaced=False,
    ),
    # RBAC
    _rt("rbac.authorization.k8s.io", "v1", "roles", "Role"),
    _rt("rbac.authorization.k8s.io", "v1", "rolebindings", "RoleBinding"),
    _rt("rbac.authorization.k8s.io", "v1", "clusterroles", "ClusterRole", namespaced=False),
    _rt("rbac.authorization.k8s.io", "v1", "clusterrolebindings", "ClusterRoleBinding", namespaced=False),
    # Gateway API (served as if its CRDs were installed)
    _rt(
        "gateway.networking.k8s.io",
        "v1",
        "gatewayclasses",
        "GatewayClass",
        namespaced=False,
        short=["gc"],
        cats=["gateway-api"],
        subs=["status"],
    ),
    _rt(
        "gateway.networking.k8s.io",
        "v1",
        "gateways",
        "Gateway",
        short=["gtw"],
        cats=["gateway-api"],
        subs=["status"],
    ),
    _rt("gateway.networking.k8s.io", "v1", "httproutes", "HTTPRoute", cats=["gateway-api"], subs=["status"]),
    # Prometheus Operator (served as if its CRDs were installed)
    _rt(
        "monitoring.coreos.com",
        "v1",
        "servicemonitors",
        "ServiceMonitor",
        short=["smon"],
        cats=["prometheus-operator"],
    ),
    _rt(
        "monitoring.coreos.com",
        "v1",
        "podmonitors",
        "PodMonitor",
        short=["pmon"],
        cats=["prometheus-operator"],
    ),
    _rt(
        "monitoring.coreos.com",
        "v1",
        "prometheusrules",
        "PrometheusRule",
        short=["promrule"],
        cats=["prometheus-operator"],
    ),
)


def resources_from_crd(crd: dict[str, Any]) -> list[ResourceType]:
    """One :class:`ResourceType` per served version of a ``CustomResourceDefinition``."""
    spec = crd.get("spec") or {}
    names = spec.get("names") or {}
    group = spec["group"]
    versions = [v for v in spec.get("versions") or [] if v.get("served", True)]
    served = tuple(v["name"] for v in versions)
    result = []
    for version in versions:
        subs = version.get("subresources") or {}
        schema = (version.get("schema") or {}).get("openAPIV3Schema")
        result.append(
            ResourceType(
                group=group,
                version=version["name"],
                plural=names["plural"],
                kind=names["kind"],
                namespaced=spec.get("scope", "Namespaced") == "Namespaced",
                singular=names.get("singular") or names["kind"].lower(),
                short_names=tuple(names.get("shortNames") or ()),
                categories=tuple(names.get("categories") or ()),
                subresources=tuple(s for s in ("status", "scale") if s in subs),
                schema=schema,
                printer_columns=tuple(version.get("additionalPrinterColumns") or ()),
                crd=crd["metadata"]["name"],
                served_versions=served,
            )
        )
    return result


class Registry:
    """The resource types currently served, looked up by URL parts or by kind."""

    def __init__(self, builtins: Iterable[ResourceType] = BUILTIN_RESOURCES) -> None:
        self._types: dict[tuple[str, str, str], ResourceType] = {}
        self._builtin_keys: set[tuple[str, str, str]] = set()
        for rt in builtins:
            self.add(rt)
            self._builtin_keys.add((rt.group, rt.version, rt.plural))
        self._by_crd: dict[str, list[tuple[str, str, str]]] = {}

    def add(self, rt: ResourceType) -> None:
        self._types[(rt.group, rt.version, rt.plural)] = rt

    def register_crd(self, crd: dict[str, Any]) -> list[ResourceType]:
        self.unregister_crd(crd["metadata"]["name"])
        added = resources_from_crd(crd)
        for rt in added:
            self.add(rt)
        self._by_crd[crd["metadata"]["name"]] = [(rt.group, rt.version, rt.plural) for rt in added]
        return added

    def unregister_crd(self, name: str) -> None:
        for key in self._by_crd.pop(name, []):
            self._types.pop(key, None)

    def get(self, group: str, version: str, plural: str) -> ResourceType | None:
        return self._types.get((group, version, plural))

    def by_group_resource(self, group: str, plural: str) -> list[ResourceType]:
        return [rt for rt in self._types.values() if rt.group == group and rt.plural == plural]

    def all(self) -> list[ResourceType]:
        return list(self._types.values())

    def groups(self) -> dict[str, list[str]]:
        """Group name -> versions, preferred version first (core group excluded)."""
        result: dict[str, list[str]] = {}
        for rt in self._types.values():
            if rt.group:
                versions = result.setdefault(rt.group, [])
                if rt.version not in versions:
                    versions.append(rt.version)
        for group, versions in result.items():
            preferred = [rt.served_versions[0] for rt in self._types.values() if rt.group == group and rt.crd]
            versions.sort(key=lambda v: (v != (preferred[0] if preferred else v), _version_rank(v)))
        return result


def _version_rank(version: str) -> tuple[int, int, int]:
    """Kubernetes version priority: GA > beta > alpha, higher numbers first."""
    import re

    match = re.fullmatch(r"v(\d+)(?:(alpha|beta)(\d+))?", version)
    if not match:
        return (3, 0, 0)
    major, stage, minor = match.groups()
    stage_rank = {None: 0, "beta": 1, "alpha": 2}[stage]
    return (stage_rank, -int(major), -int(minor or 0))
