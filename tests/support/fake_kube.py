"""An in-memory stand-in for the operator's Kubernetes client, for unit tests of the apply side.

It implements the calls of :class:`mlrollouts.controller.children.KubeApi` over a dict of objects,
with the API server's answers that matter to the controller: 404 as ``None`` on GET and DELETE,
409 on a create of an existing object, merge patches (RFC 7386), label selectors on LIST. Every
write is recorded so tests can assert what a pass sent.
"""

from __future__ import annotations

import copy
from typing import Any

from mlrollouts.controller.kube import KubeError

Obj = dict[str, Any]


def merge(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge(result.get(key), value)
    return result


class FakeKube:
    def __init__(self) -> None:
        self.objects: dict[tuple[str, str, str], Obj] = {}
        self.writes: list[tuple[str, str, str]] = []
        """(verb, kind, name) of every write, in order."""
        self.fail_next: KubeError | None = None

    def _check(self) -> None:
        if self.fail_next is not None:
            error, self.fail_next = self.fail_next, None
            raise error

    def put(self, obj: Obj) -> Obj:
        """Store ``obj`` as if another actor (a user, the kubelet) had written it."""
        meta = obj["metadata"]
        self.objects[(obj["kind"], meta.get("namespace", ""), meta["name"])] = copy.deepcopy(obj)
        return obj

    def object(self, kind: str, namespace: str, name: str) -> Obj | None:
        return self.objects.get((kind, namespace, name))

    def make_ready(self, *names: str) -> None:
        """The named Deployments (every one applied so far when none is named) report all their
        replicas ready, as the kubelet and the Deployment controller would."""
        for (kind, _, name), obj in self.objects.items():
            if kind == "Deployment" and (not names or name in names):
                replicas = obj["spec"].get("replicas", 1)
                obj["status"] = {
                    "readyReplicas": replicas,
                    "replicas": replicas,
                    "observedGeneration": obj["metadata"]["generation"],
                }

    def names(self, kind: str) -> list[str]:
        return sorted(name for (k, _, name) in self.objects if k == kind)

    async def get(self, api_version: str, kind: str, namespace: str, name: str) -> Obj | None:
        self._check()
        found = self.objects.get((kind, namespace, name))
        return copy.deepcopy(found) if found is not None else None

    async def list(self, api_version: str, kind: str, namespace: str, selector: dict[str, str]) -> list[Obj]:
        self._check()
        return [
            copy.deepcopy(o)
            for (k, ns, _), o in self.objects.items()
            if k == kind
            and ns == namespace
            and all((o["metadata"].get("labels") or {}).get(key) == v for key, v in selector.items())
        ]

    async def apply(self, obj: Obj) -> Obj:
        self._check()
        meta = obj["metadata"]
        key = (obj["kind"], meta["namespace"], meta["name"])
        before = self.objects.get(key) or {}
        applied = {**copy.deepcopy(obj), "status": before.get("status", {})}
        generation = (before.get("metadata") or {}).get("generation", 0)
        if before.get("spec") != obj.get("spec"):
            generation += 1
        applied["metadata"] = {**applied["metadata"], "generation": generation}
        self.objects[key] = applied
        self.writes.append(("apply", obj["kind"], meta["name"]))
        return copy.deepcopy(applied)

    async def create(self, obj: Obj) -> Obj:
        self._check()
        meta = obj["metadata"]
        key = (obj["kind"], meta["namespace"], meta["name"])
        if key in self.objects:
            raise KubeError(409, f"{obj['kind']} {meta['name']} already exists")
        self.objects[key] = copy.deepcopy(obj)
        self.writes.append(("create", obj["kind"], meta["name"]))
        return copy.deepcopy(obj)

    async def merge_patch(
        self,
        api_version: str,
        kind: str,
        namespace: str,
        name: str,
        patch: Obj,
        subresource: str | None = None,
    ) -> Obj:
        self._check()
        key = (kind, namespace, name)
        if key not in self.objects:
            raise KubeError(404, f"{kind} {name} not found")
        self.objects[key] = merge(self.objects[key], patch)
        self.writes.append((f"patch/{subresource}" if subresource else "patch", kind, name))
        return copy.deepcopy(self.objects[key])

    async def delete(self, api_version: str, kind: str, namespace: str, name: str) -> None:
        self._check()
        if self.objects.pop((kind, namespace, name), None) is not None:
            self.writes.append(("delete", kind, name))
