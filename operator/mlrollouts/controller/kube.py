"""A small async JSON client for the objects the operator owns (server-side apply, merge patch, list).

kopf watches the ModelDeployments; this client reads and writes their children. Connection settings
come from the in-cluster service account or the kubeconfig, through the ``kubernetes`` config loader.
"""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
from datetime import datetime
from typing import Any
from urllib.parse import quote

import httpx
from kubernetes import client as k8s_client
from kubernetes import config as k8s_config

from mlrollouts.builders.common import ACTION_ANNOTATION, Owner
from mlrollouts.builders.router import signing_key_secret, signing_key_secret_name

Obj = dict[str, Any]
FIELD_MANAGER = "mlrollouts-operator"
API_VERSION = "mlrollouts.io/v1alpha1"

log = logging.getLogger("mlrollouts.controller")

PLURALS = {
    "Deployment": "deployments",
    "Service": "services",
    "ConfigMap": "configmaps",
    "ServiceAccount": "serviceaccounts",
    "Role": "roles",
    "RoleBinding": "rolebindings",
    "Ingress": "ingresses",
    "HTTPRoute": "httproutes",
    "ModelDeployment": "modeldeployments",
    "Experiment": "experiments",
    "Secret": "secrets",
    "Event": "events",
}


class KubeError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status


def resource_path(api_version: str, kind: str, namespace: str, name: str | None = None) -> str:
    base = f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"
    path = f"{base}/namespaces/{quote(namespace)}/{PLURALS[kind]}"
    return f"{path}/{quote(name)}" if name else path


class Kube:
    def __init__(self, http: httpx.AsyncClient) -> None:
        self.http = http

    @classmethod
    def from_environment(cls, timeout: float = 10.0) -> Kube:
        configuration = k8s_client.Configuration()
        try:
            k8s_config.load_incluster_config(client_configuration=configuration)
        except k8s_config.ConfigException:
            k8s_config.load_kube_config(client_configuration=configuration)
        headers = {"Accept": "application/json"}
        token = configuration.api_key.get("authorization") or configuration.api_key.get("BearerToken")
        if token:
            headers["Authorization"] = token if token.startswith("Bearer ") else f"Bearer {token}"
        verify: Any = configuration.verify_ssl
        if verify and configuration.ssl_ca_cert:
            verify = configuration.ssl_ca_cert
        cert = (
            (configuration.cert_file, configuration.key_file)
            if configuration.cert_file and configuration.key_file
            else None
        )
        limits = httpx.Limits(max_connections=20, max_keepalive_connections=20)
        http = httpx.AsyncClient(
            base_url=configuration.host.rstrip("/"),
            headers=headers,
            verify=verify,
            cert=cert,
            timeout=timeout,
            limits=limits,
        )
        return cls(http)

    async def close(self) -> None:
        await self.http.aclose()

    async def _call(self, method: str, path: str, **kw: Any) -> Obj | None:
        response = await self.http.request(method, path, **kw)
        if response.status_code == 404 and method in ("GET", "DELETE"):
            return None
        if response.status_code >= 400:
            try:
                message = response.json().get("message", response.text)
            except ValueError:
                message = response.text
            raise KubeError(response.status_code, f"{method} {path}: {message}")
        return response.json() if response.content else {}

    async def get(self, api_version: str, kind: str, namespace: str, name: str) -> Obj | None:
        return await self._call("GET", resource_path(api_version, kind, namespace, name))

    async def list(self, api_version: str, kind: str, namespace: str, selector: dict[str, str]) -> list[Obj]:
        params = {"labelSelector": ",".join(f"{k}={v}" for k, v in selector.items())}
        body = await self._call("GET", resource_path(api_version, kind, namespace), params=params)
        return list((body or {}).get("items") or [])

    async def apply(self, obj: Obj) -> Obj:
        """Server-side apply as the operator's field manager (forced: the operator owns these fields)."""
        meta = obj["metadata"]
        path = resource_path(obj["apiVersion"], obj["kind"], meta["namespace"], meta["name"])
        result = await self._call(
            "PATCH",
            path,
            params={"fieldManager": FIELD_MANAGER, "force": "true"},
            content=json.dumps(obj).encode(),
            headers={"Content-Type": "application/apply-patch+yaml"},
        )
        return result or {}

    async def create(self, obj: Obj) -> Obj:
        meta = obj["metadata"]
        path = resource_path(obj["apiVersion"], obj["kind"], meta["namespace"])
        result = await self._call("POST", path, content=json.dumps(obj).encode())
        return result or {}

    async def merge_patch(
        self,
        api_version: str,
        kind: str,
        namespace: str,
        name: str,
        patch: Obj,
        subresource: str | None = None,
    ) -> Obj:
        path = resource_path(api_version, kind, namespace, name)
        if subresource:
            path += f"/{subresource}"
        result = await self._call(
            "PATCH",
            path,
            content=json.dumps(patch).encode(),
            headers={"Content-Type": "application/merge-patch+json"},
        )
        return result or {}

    async def delete(self, api_version: str, kind: str, namespace: str, name: str) -> None:
        await self._call(
            "DELETE",
            resource_path(api_version, kind, namespace, name),
            params={"propagationPolicy": "Background"},
        )


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


async def ensure_signing_key(kube: Kube, owner: Owner, cache: dict[str, str]) -> int:
    """Create the router's signing-key Secret once with a random key; an existing one is kept (never
    rotated: ids signed before a restart must still verify). Create-only, so the operator needs no
    right to read or change any Secret. Returns the number of objects created (0 or 1)."""
    key = f"Secret/{signing_key_secret_name(owner)}"
    if cache.get(key) == "present":
        return 0
    created = 1
    try:
        await kube.create(signing_key_secret(owner, secrets.token_urlsafe(32)))
    except KubeError as exc:
        if exc.status != 409:
            raise
        created = 0  # it exists (an earlier pass or run made it): keep that key
    cache[key] = "present"
    return created


async def apply_cached(kube: Kube, obj: Obj, cache: dict[str, str]) -> int:
    """Server-side apply ``obj`` unless the same content was applied last (``cache`` maps
    ``Kind/name`` to a digest, kept per resource by the caller). Returns the number of writes."""
    key = f"{obj['kind']}/{obj['metadata']['name']}"
    digest = hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()
    if cache.get(key) == digest:
        return 0
    await kube.apply(obj)
    cache[key] = digest
    return 1


def refused_status(
    status_before: Obj,
    generation: int,
    message: str,
    now: datetime,
    reason: str = "InvalidSpec",
    phase: str | None = None,
) -> Obj:
    """The status of a resource the operator will not act on (bad spec, refused image): ``Ready``
    False with ``reason`` and, with ``phase="Degraded"``, a ``Degraded`` condition; other conditions
    are kept, and a condition that keeps its status keeps its ``lastTransitionTime``."""
    stamp = now.strftime("%Y-%m-%dT%H:%M:%SZ")
    changed = {"Ready": "False", **({"Degraded": "True"} if phase == "Degraded" else {})}
    before = list(status_before.get("conditions") or [])
    previous = {c.get("type"): c for c in before}
    conditions = [c for c in before if c.get("type") not in changed]
    for ctype, cstatus in changed.items():
        old = previous.get(ctype) or {}
        since = old.get("lastTransitionTime") if old.get("status") == cstatus else None
        conditions.append(
            {
                "type": ctype,
                "status": cstatus,
                "reason": reason,
                "message": message,
                "lastTransitionTime": since or stamp,
                "observedGeneration": generation,
            }
        )
    prefix = "invalid spec" if reason == "InvalidSpec" else reason
    status: Obj = {"message": f"{prefix}: {message}", "conditions": conditions}
    if phase is not None:
        status["phase"] = phase
    return status


async def clear_action(kube: Kube, kind: str, namespace: str, name: str) -> None:
    """Remove the handled ``mlrollouts.io/action`` annotation; a failure is only logged (the next
    pass sees the annotation again and the action is idempotent)."""
    try:
        await kube.merge_patch(
            API_VERSION, kind, namespace, name, {"metadata": {"annotations": {ACTION_ANNOTATION: None}}}
        )
    except KubeError as exc:
        log.warning("could not remove %s from %s/%s: %s", ACTION_ANNOTATION, namespace, name, exc)
