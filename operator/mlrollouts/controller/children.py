"""The apply side every kind shares: writes of the objects a resource owns, and of the resource itself.

A :class:`Children` lives as long as its resource does in this operator process. It remembers a
digest of what it last applied, so an unchanged child is not sent again; a new process (or an API
error, after which nothing is certain) starts with an empty memory and applies everything once.
"""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
from collections.abc import Callable
from typing import Any, Protocol

from mlrollouts.builders.common import Owner
from mlrollouts.builders.learner import snapshot_key_secret, snapshot_key_secret_name
from mlrollouts.builders.router import signing_key_secret, signing_key_secret_name
from mlrollouts.controller.kube import KubeError
from mlrollouts.core.names import ACTION_ANNOTATION, ACTIONS_HANDLED_ANNOTATION

Obj = dict[str, Any]

log = logging.getLogger("mlrollouts.controller")


class KubeApi(Protocol):
    """The calls the controller makes; :class:`mlrollouts.controller.kube.Kube` is the real one."""

    async def get(self, api_version: str, kind: str, namespace: str, name: str) -> Obj | None: ...

    async def list(
        self, api_version: str, kind: str, namespace: str, selector: dict[str, str]
    ) -> list[Obj]: ...

    async def apply(self, obj: Obj) -> Obj: ...

    async def create(self, obj: Obj) -> Obj: ...

    async def merge_patch(
        self,
        api_version: str,
        kind: str,
        namespace: str,
        name: str,
        patch: Obj,
        subresource: str | None = None,
    ) -> Obj: ...

    async def delete(self, api_version: str, kind: str, namespace: str, name: str) -> None: ...


def merge_patch_for(old: Any, new: Any) -> Any:
    """The RFC 7386 merge patch that turns ``old`` into ``new`` (removed keys become ``null``)."""
    if not isinstance(old, dict) or not isinstance(new, dict):
        return new
    patch: dict[str, Any] = {}
    for key in old.keys() - new.keys():
        patch[key] = None
    for key, value in new.items():
        if key not in old:
            patch[key] = value
        elif old[key] != value:
            patch[key] = merge_patch_for(old[key], value)
    return patch


def _key(kind: str, name: str) -> str:
    return f"{kind}/{name}"


class Children:
    """Writes of one resource's pass, each counted; ``applied`` is the number of writes so far."""

    def __init__(self, kube: KubeApi, namespace: str, cache: dict[str, str] | None = None) -> None:
        self.kube, self.namespace = kube, namespace
        self.cache: dict[str, str] = cache if cache is not None else {}
        self.applied = 0

    def forget(self) -> None:
        """Unsure what reached the API server: apply everything again on the next pass."""
        self.cache.clear()

    async def apply(self, obj: Obj) -> int:
        """Server-side apply ``obj`` unless the same content was applied last."""
        key = _key(obj["kind"], obj["metadata"]["name"])
        digest = hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()
        if self.cache.get(key) == digest:
            return 0
        await self.kube.apply(obj)
        self.cache[key] = digest
        self.applied += 1
        return 1

    async def scale(self, name: str, replicas: int) -> int:
        """Set a Deployment's replicas; its next apply must not be skipped as unchanged."""
        patch = {"spec": {"replicas": replicas}}
        await self.kube.merge_patch("apps/v1", "Deployment", self.namespace, name, patch)
        self.cache.pop(_key("Deployment", name), None)
        self.applied += 1
        return 1

    async def delete(self, api_version: str, kind: str, name: str) -> int:
        await self.kube.delete(api_version, kind, self.namespace, name)
        self.cache.pop(_key(kind, name), None)
        self.applied += 1
        return 1

    async def create(self, obj: Obj) -> int:
        """Create ``obj``; one that exists already (an earlier pass made it) is kept as it is. For
        objects whose spec cannot change once made (a Job): never applied over."""
        try:
            await self.kube.create(obj)
        except KubeError as exc:
            if exc.status != 409:
                raise
            return 0
        self.applied += 1
        return 1

    async def ensure_created(self, kind: str, name: str, build: Callable[[], Obj]) -> int:
        """Create the object ``build()`` makes unless ``kind``/``name`` exists; an existing one is
        kept as it is. For Secrets holding keys that must never change (ids or snapshots signed
        before must still verify): create-only, so the operator needs no right to read or change
        any Secret."""
        key = _key(kind, name)
        if self.cache.get(key) == "present":
            return 0
        created = 1
        try:
            await self.kube.create(build())
        except KubeError as exc:
            if exc.status != 409:
                raise
            created = 0  # an earlier pass or process made it: keep it
        self.cache[key] = "present"
        self.applied += created
        return created

    async def ensure_signing_key(self, owner: Owner) -> int:
        """The router's id-signing key, created once with a random key."""
        return await self.ensure_created(
            "Secret",
            signing_key_secret_name(owner),
            lambda: signing_key_secret(owner, secrets.token_urlsafe(32)),
        )

    async def ensure_snapshot_key(self, owner: Owner) -> int:
        """The learner's snapshot-signing key, created once with a random key."""
        return await self.ensure_created(
            "Secret",
            snapshot_key_secret_name(owner),
            lambda: snapshot_key_secret(owner, secrets.token_urlsafe(32)),
        )


class ResourceWriter:
    """Writes of the resource itself: its status subresource and the removal of a handled action.
    ``resource_version`` is the object's version as the last write left it (at first: as read)."""

    def __init__(
        self,
        kube: KubeApi,
        api_version: str,
        kind: str,
        namespace: str,
        name: str,
        resource_version: str | None = None,
    ) -> None:
        self.kube, self.api_version, self.kind = kube, api_version, kind
        self.namespace, self.name = namespace, name
        self.resource_version = resource_version

    async def status(self, before: Obj, after: Obj) -> bool:
        """Patch only what changed; returns whether anything was written."""
        patch = merge_patch_for(before, after)
        if not patch:
            return False
        written = await self.kube.merge_patch(
            self.api_version, self.kind, self.namespace, self.name, {"status": patch}, subresource="status"
        )
        self.resource_version = (
            (written or {}).get("metadata", {}).get("resourceVersion", self.resource_version)
        )
        return True

    async def clear_action(self, number: int) -> bool:
        """Remove the handled action annotation and count it as the ``number``-th handled; returns
        whether it was removed. The patch holds the version of the object this pass last wrote or
        read: were the object changed since (a new request among the changes) the server refuses
        it, rather than remove a request no pass has seen. A failure is only logged: the annotation
        stays, the status says it was acted on, and the next pass removes it."""
        meta: Obj = {"annotations": {ACTION_ANNOTATION: None, ACTIONS_HANDLED_ANNOTATION: str(number)}}
        if self.resource_version:
            meta["resourceVersion"] = self.resource_version
        try:
            await self.kube.merge_patch(
                self.api_version, self.kind, self.namespace, self.name, {"metadata": meta}
            )
        except KubeError as exc:
            log.warning(
                "could not remove %s from %s/%s: %s", ACTION_ANNOTATION, self.namespace, self.name, exc
            )
            return False
        return True
