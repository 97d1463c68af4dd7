"""The object store: what etcd plus the registry strategies and the garbage collector do in a cluster.

All operations are synchronous and run on the server's event loop, so each one is atomic with
respect to requests and watchers. Every committed change gets the next global ``resourceVersion``
and is appended to a bounded change log, from which watches resume; asking for a version older than
the log keeps gives ``410 Gone``.
"""

from __future__ import annotations

import collections
import copy
import dataclasses
import datetime
import ipaddress
import random
import re
import string
import uuid
from collections.abc import Callable, Iterator
from typing import Any

from . import errors, schema
from .errors import ApiError, FieldError
from .resources import Registry, ResourceType

ObjKey = tuple[str, str]  # (namespace or "", name)
TypeKey = tuple[str, str]  # (group, plural)

_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_IMMUTABLE_META = (
    "name",
    "namespace",
    "uid",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "generation",
    "resourceVersion",
    "selfLink",
)
_SYSTEM_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")
_CRD_KEY = ("apiextensions.k8s.io", "customresourcedefinitions")
_NS_KEY = ("", "namespaces")


_METADATA_STRINGS = ("name", "generateName", "namespace", "uid", "resourceVersion")
_METADATA_STRING_MAPS = ("labels", "annotations")


def _check_metadata_types(rt: ResourceType, meta: dict[str, Any]) -> None:
    """Object metadata decodes into typed Go fields: a number where a string belongs is a 400."""

    def refuse(field: str, value: Any, wanted: str) -> None:
        raise errors.bad_request(
            f'{rt.kind} in version "{rt.version}" cannot be handled as a {rt.kind}: json: cannot unmarshal '
            f"{_go_json_type(value)} into Go struct field ObjectMeta.metadata.{field} of type {wanted}"
        )

    for field in _METADATA_STRINGS:
        if meta.get(field) is not None and not isinstance(meta[field], str):
            refuse(field, meta[field], "string")
    for field in _METADATA_STRING_MAPS:
        value = meta.get(field)
        if value is not None and not isinstance(value, dict):
            refuse(field, value, "map[string]string")
        for item in (value or {}).values():
            if not isinstance(item, str):
                refuse(field, item, "string")


def _go_json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    return {dict: "object", list: "array", str: "string"}.get(type(value), "value")


def timestamp(now: datetime.datetime | None = None) -> str:
    now = now or datetime.datetime.now(tz=datetime.UTC)
    return now.strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclasses.dataclass(frozen=True)
class Change:
    """One committed change, as watchers see it."""

    rv: int
    key: TypeKey
    type: str  # ADDED, MODIFIED, DELETED
    obj: dict[str, Any]
    old: dict[str, Any] | None


class Store:
    """Objects by resource and key. Stored objects are never changed in place: every write stores a
    new dict, so readers, watch events and responses can share them without copying."""

    def __init__(self, registry: Registry, *, history_limit: int = 10_000) -> None:
        self.registry = registry
        self.rv = 0
        self.objects: dict[TypeKey, dict[ObjKey, dict[str, Any]]] = collections.defaultdict(dict)
        self.log: collections.deque[Change] = collections.deque(maxlen=history_limit)
        self.compacted_rv = 0  # changes at or below this version are no longer in the log
        self.listeners: set[Callable[[Change], None]] = set()
        self.schedule: Callable[[Callable[[], None]], object] = lambda fn: fn()
        self._gc_scheduled = False
        # Last configuration applied (server-side apply) per object and field manager.
        self.applied: dict[tuple[TypeKey, ObjKey, str], dict[str, Any]] = {}
        self._cluster_ips: set[str] = set()
        for name in _SYSTEM_NAMESPACES:
            self._bootstrap_namespace(name)

    # ------------------------------------------------------------------------------------------ basics

    def _bootstrap_namespace(self, name: str) -> None:
        rt = self._rt(_NS_KEY)
        self.create(rt, None, {"metadata": {"name": name}})

    def _rt(self, key: TypeKey) -> ResourceType:
        found = self.registry.by_group_resource(*key)
        if not found:
            raise errors.internal(f"resource {key} is not registered")
        return found[0]

    def next_rv(self) -> int:
        self.rv += 1
        return self.rv

    def compact(self) -> None:
        """Forget the change log, as etcd compaction does: older watches must relist."""
        self.log.clear()
        self.compacted_rv = self.rv

    def oldest_resumable(self) -> int:
        if self.log.maxlen is not None and len(self.log) == self.log.maxlen:
            return self.log[0].rv - 1
        return self.compacted_rv

    def _emit(self, kind: str, rt: ResourceType, obj: dict[str, Any], old: dict[str, Any] | None) -> None:
        if len(self.log) == self.log.maxlen and self.log:
            self.compacted_rv = self.log[0].rv
        change = Change(int(obj["metadata"]["resourceVersion"]), rt.key, kind, obj, old)
        self.log.append(change)
        for listener in list(self.listeners):
            listener(change)

    def changes_since(self, rv: int, key: TypeKey) -> Iterator[Change]:
        for change in self.log:
            if change.rv > rv and change.key == key:
                yield change

    def get(self, rt: ResourceType, namespace: str | None, name: str) -> dict[str, Any] | None:
        return self.objects[rt.key].get((namespace or "", name))

    def list_objects(self, rt: ResourceType, namespace: str | None) -> list[dict[str, Any]]:
        items = self.objects[rt.key]
        keys = sorted(k for k in items if namespace is None or k[0] == namespace)
        return [items[k] for k in keys]

    def all_objects(self) -> Iterator[tuple[TypeKey, ObjKey, dict[str, Any]]]:
        for type_key, items in list(self.objects.items()):
            for obj_key, obj in list(items.items()):
                yield type_key, obj_key, obj

    def _present(self, rt: ResourceType, obj: dict[str, Any]) -> dict[str, Any]:
        """The object as served by ``rt``'s version (kind and apiVersion stamped)."""
        result = copy.deepcopy(obj)
        result["apiVersion"] = rt.api_version
        result["kind"] = rt.kind
        return result

    # ------------------------------------------------------------------------------------------ create

    def create(
        self, rt: ResourceType, namespace: str | None, body: Any, *, dry_run: bool = False
    ) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise errors.bad_request("the body of the request must be a JSON object")
        obj = copy.deepcopy(body)
        meta = obj.get("metadata")
        if meta is None:
            meta = obj["metadata"] = {}
        if not isinstance(meta, dict):
            raise errors.bad_request("metadata must be an object")
        _check_metadata_types(rt, meta)
        self._check_type_meta(rt, obj)
        if rt.namespaced:
            if not namespace:
                raise errors.bad_request(
                    "the server could not find the requested resource: a namespace is required"
                )
            if meta.get("namespace") and meta["namespace"] != namespace:
                raise errors.bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request"
                )
            meta["namespace"] = namespace
        else:
            meta.pop("namespace", None)
        if not meta.get("name"):
            if meta.get("generateName"):
                suffix = "".join(random.choices(string.ascii_lowercase + string.digits, k=5))
                meta["name"] = f"{meta['generateName']}{suffix}"
            else:
                raise errors.invalid(
                    rt,
                    "",
                    [FieldError("Required", "metadata.name", None, "name or generateName is required")],
                )
        name = meta["name"]
        self._check_name(rt, name)
        if rt.namespaced:
            ns_obj = self.objects[_NS_KEY].get(("", namespace or ""))
            if ns_obj is None:
                raise errors.namespace_not_found(namespace or "")
            if ns_obj["metadata"].get("deletionTimestamp"):
                raise errors.forbidden(
                    rt,
                    name,
                    f"unable to create new content in namespace {namespace} because it is being terminated",
                )
        if (namespace or "", name) in self.objects[rt.key]:
            raise errors.already_exists(rt, name)
        for field in (
            "resourceVersion",
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "generation",
            "selfLink",
            "managedFields",
        ):
            meta.pop(field, None)
        if rt.has_status:
            obj.pop("status", None)
        self._builtin_defaults(rt, obj)
        if rt.is_custom:
            obj = self._validate_custom(rt, obj, None)
        elif rt.key == _CRD_KEY:
            self._validate_crd(rt, obj)
        meta = obj["metadata"]
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = timestamp()
        if rt.has_generation:
            meta["generation"] = 1
        if rt.key == _CRD_KEY:
            obj["status"] = self._crd_status(obj)
        if dry_run:
            return self._present(rt, obj)
        meta["resourceVersion"] = str(self.next_rv())
        obj = self._present(rt, obj)
        self.objects[rt.key][(meta.get("namespace", ""), name)] = obj
        if rt.key == _CRD_KEY:
            self.registry.register_crd(obj)
        if meta.get("ownerReferences"):
            self.request_gc()
        self._emit("ADDED", rt, obj, None)
        return obj

    def _check_type_meta(self, rt: ResourceType, obj: dict[str, Any]) -> None:
        api_version, kind = obj.get("apiVersion"), obj.get("kind")
        if (
            api_version
            and api_version != rt.api_version
            and not (rt.is_custom and api_version.split("/")[0] == rt.group)
        ):
            raise errors.bad_request(
                f"the API version in the data ({api_version}) does not match the expected API version ({rt.api_version})"
            )
        if kind and kind != rt.kind:
            raise errors.bad_request(
                f"the kind in the data ({kind}) does not match the expected kind ({rt.kind})"
            )

    def _check_name(self, rt: ResourceType, name: str) -> None:
        if rt.key == _NS_KEY:
            ok = len(name) <= 63 and _DNS_LABEL.match(name) is not None
            what = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character"
        else:
            ok = len(name) <= 253 and _DNS_SUBDOMAIN.match(name) is not None
            what = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character"
        if not ok:
            raise errors.invalid(rt, name, [FieldError("Invalid", "metadata.name", name, what)])

    def _builtin_defaults(self, rt: ResourceType, obj: dict[str, Any]) -> None:
        if rt.key == _NS_KEY:
            obj["spec"] = {"finalizers": ["kubernetes"]}
            obj["status"] = {"phase": "Active"}
        elif rt.key == ("", "services"):
            spec = obj.setdefault("spec", {})
            spec.setdefault("type", "ClusterIP")
            if spec.get("clusterIP") != "None":
                spec.setdefault("clusterIP", self._allocate_ip())
                spec.setdefault("clusterIPs", [spec["clusterIP"]])
            for port in spec.get("ports") or []:
                port.setdefault("protocol", "TCP")
                port.setdefault("targetPort", port.get("port"))
            spec.setdefault("sessionAffinity", "None")
        elif rt.key in (("apps", "deployments"), ("apps", "statefulsets"), ("apps", "replicasets")):
            obj.setdefault("spec", {}).setdefault("replicas", 1)
        elif rt.key == ("", "pods"):
            obj["status"] = {"phase": "Pending"}

    def _allocate_ip(self) -> str:
        network = ipaddress.ip_network("10.96.0.0/16")
        for _ in range(1000):
            ip = str(network[random.randint(2, network.num_addresses - 2)])
            if ip not in self._cluster_ips:
                self._cluster_ips.add(ip)
                return ip
        raise errors.internal("no free cluster IPs")

    # ------------------------------------------------------------------------------------------ CRDs

    def _validate_crd(self, rt: ResourceType, obj: dict[str, Any]) -> None:
        spec = obj.get("spec") or {}
        name = obj["metadata"]["name"]
        problems: list[FieldError] = []
        names = spec.get("names") or {}
        for field in ("group",):
            if not spec.get(field):
                problems.append(FieldError("Required", f"spec.{field}", None))
        for field in ("plural", "kind"):
            if not names.get(field):
                problems.append(FieldError("Required", f"spec.names.{field}", None))
        if spec.get("scope") not in ("Namespaced", "Cluster"):
            problems.append(
                FieldError(
                    "Unsupported",
                    "spec.scope",
                    spec.get("scope"),
                    'supported values: "Cluster", "Namespaced"',
                )
            )
        versions = spec.get("versions") or []
        if not versions:
            problems.append(
                FieldError(
                    "Invalid",
                    "spec.versions",
                    versions,
                    "must have exactly one version marked as storage version",
                )
            )
        if names.get("plural") and spec.get("group") and name != f"{names['plural']}.{spec['group']}":
            problems.append(
                FieldError("Invalid", "metadata.name", name, 'must be spec.names.plural+"."+spec.group')
            )
        for index, version in enumerate(versions):
            root = ((version.get("schema") or {}).get("openAPIV3Schema")) or {}
            for where, rule in schema.iter_rules(root):
                try:
                    schema.compile_rule(rule.get("rule", ""))
                except schema.CelCompileError as exc:
                    problems.append(
                        FieldError(
                            "Invalid",
                            f"spec.versions[{index}].schema.{where}",
                            rule.get("rule", ""),
                            f"compilation failed: {exc}",
                        )
                    )
        if problems:
            raise errors.invalid(rt, name, problems)

    def _crd_status(self, crd: dict[str, Any]) -> dict[str, Any]:
        now = timestamp()
        names = (crd.get("spec") or {}).get("names") or {}
        accepted = {k: v for k, v in names.items()}
        accepted.setdefault("singular", (names.get("kind") or "").lower())
        accepted.setdefault("listKind", f"{names.get('kind', '')}List")
        return {
            "acceptedNames": accepted,
            "storedVersions": [
                v["name"] for v in (crd.get("spec") or {}).get("versions") or [] if v.get("storage")
            ],
            "conditions": [
                {"type": t, "status": "True", "lastTransitionTime": now, "reason": r, "message": m}
                for t, r, m in (
                    ("NamesAccepted", "NoConflicts", "no conflicts found"),
                    ("Established", "InitialNamesAccepted", "the initial names have been accepted"),
                )
            ],
        }

    def _validate_custom(
        self, rt: ResourceType, obj: dict[str, Any], old: dict[str, Any] | None
    ) -> dict[str, Any]:
        if not rt.schema:
            return obj
        pruned, _unknown = schema.prune_and_default(obj, rt.schema)
        problems = schema.validate(pruned, rt.schema, old, has_old=old is not None)
        if problems:
            raise errors.invalid(rt, obj["metadata"].get("name", ""), problems)
        return pruned

    # ------------------------------------------------------------------------------------------ update

    def update(
        self,
        rt: ResourceType,
        namespace: str | None,
        name: str,
        compute: Callable[[dict[str, Any]], Any],
        *,
        subresource: str | None = None,
        dry_run: bool = False,
        require_rv: bool = False,
    ) -> dict[str, Any]:
        current = self.get(rt, namespace, name)
        if current is None:
            raise errors.not_found(rt, name)
        old = current if current.get("apiVersion") == rt.api_version else self._present(rt, current)
        computed = compute(copy.deepcopy(old))
        if not isinstance(computed, dict):
            raise errors.bad_request("the resulting object must be a JSON object")
        new: dict[str, Any] = computed
        new_meta = new.get("metadata")
        if not isinstance(new_meta, dict):
            new_meta = new["metadata"] = {}
        _check_metadata_types(rt, new_meta)
        if new_meta.get("name") and new_meta["name"] != name:
            raise errors.bad_request(
                f"the name of the object ({new_meta['name']}) does not match the name on the URL ({name})"
            )
        if rt.namespaced and new_meta.get("namespace") and new_meta["namespace"] != namespace:
            raise errors.bad_request(
                "the namespace of the provided object does not match the namespace sent on the request"
            )
        self._check_type_meta(rt, new)
        got_rv = new_meta.get("resourceVersion")
        if got_rv not in (None, "") and str(got_rv) != old["metadata"]["resourceVersion"]:
            raise errors.conflict(rt, name)
        if got_rv in (None, "") and require_rv:
            raise errors.invalid(
                rt,
                name,
                [FieldError("Invalid", "metadata.resourceVersion", 0, "must be specified for an update")],
            )
        old_meta = old["metadata"]
        if subresource == "status":
            status = new.get("status")
            new = copy.deepcopy(old)
            if status is None:
                new.pop("status", None)
            else:
                new["status"] = status
        else:
            for field in _IMMUTABLE_META:
                if field in old_meta:
                    new_meta[field] = copy.deepcopy(old_meta[field])
                else:
                    new_meta.pop(field, None)
            new_meta.pop("managedFields", None)
            if rt.has_status:
                if "status" in old:
                    new["status"] = copy.deepcopy(old["status"])
                else:
                    new.pop("status", None)
        new["apiVersion"], new["kind"] = rt.api_version, rt.kind
        if rt.key == _NS_KEY:
            new["spec"] = copy.deepcopy(old.get("spec", {}))
        if rt.is_custom:
            new = self._validate_custom(rt, new, old)
        elif rt.key == _CRD_KEY and subresource != "status":
            self._validate_crd(rt, new)
        if old_meta.get("deletionTimestamp"):
            added = [
                f
                for f in new["metadata"].get("finalizers") or []
                if f not in (old_meta.get("finalizers") or [])
            ]
            if added:
                raise errors.invalid(
                    rt,
                    name,
                    [
                        FieldError(
                            "Forbidden",
                            "metadata.finalizers",
                            None,
                            f"no new finalizers can be added if the object is being deleted, found new finalizers {added!r}",
                        )
                    ],
                )
        if rt.has_generation and _desired_state(rt, new) != _desired_state(rt, old):
            new["metadata"]["generation"] = int(old_meta.get("generation", 0)) + 1
        if rt.key == _CRD_KEY and subresource != "status":
            status = copy.deepcopy(old.get("status") or self._crd_status(new))
            status["acceptedNames"] = self._crd_status(new)["acceptedNames"]
            new["status"] = status
        if new == old:
            return old  # a no-op write changes nothing, not even the resourceVersion
        if dry_run:
            return new
        new["metadata"]["resourceVersion"] = str(self.next_rv())
        key = (namespace or "", name)
        if old_meta.get("deletionTimestamp") and not new["metadata"].get("finalizers"):
            del self.objects[rt.key][key]
            self._forget(rt, key, new)
            self._emit("DELETED", rt, new, old)
            self._gc_after_removal(new)
            return new
        self.objects[rt.key][key] = new
        if rt.key == _CRD_KEY:
            self.registry.register_crd(new)
        if new["metadata"].get("ownerReferences") != old_meta.get("ownerReferences"):
            self.request_gc()
        self._emit("MODIFIED", rt, new, old)
        return new

    # ------------------------------------------------------------------------------------------ delete

    def dependents_of(self, uid: str) -> list[tuple[TypeKey, ObjKey, dict[str, Any]]]:
        return [
            (tk, ok, obj)
            for tk, ok, obj in self.all_objects()
            if any(ref.get("uid") == uid for ref in obj["metadata"].get("ownerReferences") or [])
        ]

    def delete(
        self,
        rt: ResourceType,
        namespace: str | None,
        name: str,
        *,
        propagation: str | None = None,
        preconditions: dict[str, Any] | None = None,
        dry_run: bool = False,
    ) -> dict[str, Any]:
        current = self.get(rt, namespace, name)
        if current is None:
            raise errors.not_found(rt, name)
        obj = self._present(rt, current)
        meta = obj["metadata"]
        preconditions = preconditions or {}
        if preconditions.get("uid") and preconditions["uid"] != meta["uid"]:
            raise errors.conflict(
                rt,
                name,
                f"Precondition failed: UID in precondition: {preconditions['uid']}, UID in object meta: {meta['uid']}",
            )
        if (
            preconditions.get("resourceVersion")
            and str(preconditions["resourceVersion"]) != meta["resourceVersion"]
        ):
            raise errors.conflict(
                rt,
                name,
                f"Precondition failed: ResourceVersion in precondition: {preconditions['resourceVersion']}, "
                f"ResourceVersion in object meta: {meta['resourceVersion']}",
            )
        if dry_run:
            return obj
        finalizers = list(meta.get("finalizers") or [])
        dependents = self.dependents_of(meta["uid"])
        if propagation == "Foreground" and dependents and "foregroundDeletion" not in finalizers:
            finalizers.append("foregroundDeletion")
        if propagation == "Orphan":
            for tk, (dep_ns, dep_name), _dep in dependents:
                self._drop_owner(self._rt(tk), dep_ns, dep_name, meta["uid"])
        key = (namespace or "", name)
        if rt.key == _NS_KEY and name in _SYSTEM_NAMESPACES[:3]:
            raise errors.forbidden(rt, name, "this namespace may not be deleted")
        if rt.key == _NS_KEY and any(
            k[0] == name for tk, items in self.objects.items() for k in items if tk != _NS_KEY
        ):
            if not meta.get("deletionTimestamp"):
                meta["deletionTimestamp"] = timestamp()
                meta["deletionGracePeriodSeconds"] = 0
                obj["status"] = {"phase": "Terminating"}
                meta["resourceVersion"] = str(self.next_rv())
                self.objects[rt.key][key] = obj
                self._emit("MODIFIED", rt, obj, current)
            self.request_gc()
            return obj
        if finalizers:
            if not meta.get("deletionTimestamp") or finalizers != list(meta.get("finalizers") or []):
                meta.setdefault("deletionTimestamp", timestamp())
                meta.setdefault("deletionGracePeriodSeconds", 0)
                meta["finalizers"] = finalizers
                meta["resourceVersion"] = str(self.next_rv())
                self.objects[rt.key][key] = obj
                self._emit("MODIFIED", rt, obj, current)
            self.request_gc()
            return obj
        meta["resourceVersion"] = str(self.next_rv())
        del self.objects[rt.key][key]
        self._forget(rt, key, obj)
        self._emit("DELETED", rt, obj, current)
        self._gc_after_removal(obj)
        return obj

    def _gc_after_removal(self, obj: dict[str, Any]) -> None:
        """Collect garbage only when the removal can matter: to dependents, owners or a namespace."""
        meta = obj["metadata"]
        namespace = self.objects[_NS_KEY].get(("", meta.get("namespace", "")))
        if (
            meta.get("ownerReferences")
            or (namespace is not None and namespace["metadata"].get("deletionTimestamp"))
            or self.dependents_of(meta["uid"])
        ):
            self.request_gc()

    def _forget(self, rt: ResourceType, key: ObjKey, obj: dict[str, Any]) -> None:
        for applied_key in [k for k in self.applied if k[0] == rt.key and k[1] == key]:
            del self.applied[applied_key]
        if rt.key == _CRD_KEY:
            # The custom resources go with their definition; their watchers see them deleted.
            spec = obj.get("spec") or {}
            group, plural = spec.get("group", ""), (spec.get("names") or {}).get("plural", "")
            served = self.registry.by_group_resource(group, plural)
            for custom in self.objects.pop((group, plural), {}).values():
                if served:
                    final = {
                        **custom,
                        "metadata": {**custom["metadata"], "resourceVersion": str(self.next_rv())},
                    }
                    self._emit("DELETED", served[0], final, custom)
            self.registry.unregister_crd(obj["metadata"]["name"])
        if rt.key == ("", "services"):
            self._cluster_ips.discard(((obj.get("spec") or {}).get("clusterIP")) or "")

    def _drop_owner(self, rt: ResourceType, namespace: str, name: str, uid: str) -> None:
        def compute(obj: dict[str, Any]) -> dict[str, Any]:
            refs = [r for r in obj["metadata"].get("ownerReferences") or [] if r.get("uid") != uid]
            if refs:
                obj["metadata"]["ownerReferences"] = refs
            else:
                obj["metadata"].pop("ownerReferences", None)
            return obj

        self.update(rt, namespace or None, name, compute)

    # ------------------------------------------------------------------------------------------ GC

    def request_gc(self) -> None:
        if not self._gc_scheduled:
            self._gc_scheduled = True
            self.schedule(self.collect_garbage)

    def collect_garbage(self) -> None:
        """Delete dependents of deleted owners, finish foreground deletions and terminating namespaces."""
        self._gc_scheduled = False
        for _ in range(100):
            if not self._gc_pass():
                break

    def _gc_pass(self) -> bool:
        changed = False
        alive = {obj["metadata"]["uid"]: obj for _, _, obj in self.all_objects()}
        for (group, plural), (namespace, name), obj in list(self.all_objects()):
            if self.get(self._rt((group, plural)), namespace or None, name) is not obj:
                continue  # changed during this pass
            rt = self._rt((group, plural))
            meta = obj["metadata"]
            try:
                if (group, plural) == _NS_KEY and meta.get("deletionTimestamp"):
                    contents = [
                        (tk, ok, o) for tk, ok, o in self.all_objects() if tk != _NS_KEY and ok[0] == name
                    ]
                    for tk, ok, o in contents:
                        if not o["metadata"].get("deletionTimestamp"):
                            self.delete(self._rt(tk), ok[0], ok[1])
                            changed = True
                    if not contents:
                        meta = dict(meta, resourceVersion=str(self.next_rv()))
                        final = dict(obj, metadata=meta)
                        del self.objects[_NS_KEY][("", name)]
                        self._emit("DELETED", rt, final, obj)
                        changed = True
                    continue
                refs = meta.get("ownerReferences") or []
                if refs:
                    owners = [alive.get(ref.get("uid")) for ref in refs]
                    foreground = any(
                        o is not None
                        and o["metadata"].get("deletionTimestamp")
                        and "foregroundDeletion" in (o["metadata"].get("finalizers") or [])
                        for o in owners
                    )
                    living = [
                        o
                        for o in owners
                        if o is not None
                        and not (
                            o["metadata"].get("deletionTimestamp")
                            and "foregroundDeletion" in (o["metadata"].get("finalizers") or [])
                        )
                    ]
                    if not living and not meta.get("deletionTimestamp"):
                        self.delete(
                            rt,
                            namespace or None,
                            name,
                            propagation="Foreground" if foreground else "Background",
                        )
                        changed = True
                        continue
                    if living and any(o is None for o in owners):
                        for ref, owner in zip(refs, owners, strict=True):
                            if owner is None:
                                self._drop_owner(rt, namespace, name, ref.get("uid"))
                        changed = True
                        continue
                if (
                    meta.get("deletionTimestamp")
                    and "foregroundDeletion" in (meta.get("finalizers") or [])
                    and not self.dependents_of(meta["uid"])
                ):
                    self.update(rt, namespace or None, name, _without_foreground_finalizer)
                    changed = True
            except ApiError:
                continue
        return changed


def _desired_state(rt: ResourceType, obj: dict[str, Any]) -> dict[str, Any]:
    """What ``generation`` counts: all but metadata, and but status when it has its own subresource."""
    skipped = (
        ("metadata", "apiVersion", "kind", "status") if rt.has_status else ("metadata", "apiVersion", "kind")
    )
    return {k: v for k, v in obj.items() if k not in skipped}


def _without_foreground_finalizer(obj: dict[str, Any]) -> dict[str, Any]:
    obj["metadata"]["finalizers"] = [
        f for f in obj["metadata"].get("finalizers") or [] if f != "foregroundDeletion"
    ]
    return obj
