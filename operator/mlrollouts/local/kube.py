"""A small synchronous Kubernetes REST client for the local playground's own components.

The playground's process kubelet reads and writes plain JSON objects (Deployments, Pods, Services,
Endpoints) of any group; the typed ``kubernetes`` models would only get in the way. Connection
settings (server, token, client certificates, CA) come from a kubeconfig through the official
``kubernetes`` config loader, so the same code talks to the emulator and to a real cluster.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx
from kubernetes import client as k8s_client
from kubernetes import config as k8s_config

Obj = dict[str, Any]


class KubeError(Exception):
    """An API call answered with an error status."""

    def __init__(self, status: int, message: str, body: Obj | None = None) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.body = body or {}


@dataclass(frozen=True)
class ResourceRef:
    """Where a kind lives in the REST API: ``/api/v1`` (core) or ``/apis/<group>/<version>``."""

    group: str
    version: str
    plural: str
    namespaced: bool = True

    def path(
        self, namespace: str | None = None, name: str | None = None, subresource: str | None = None
    ) -> str:
        base = f"/api/{self.version}" if not self.group else f"/apis/{self.group}/{self.version}"
        if self.namespaced and namespace:
            base += f"/namespaces/{quote(namespace)}"
        base += f"/{self.plural}"
        if name:
            base += f"/{quote(name)}"
        if subresource:
            base += f"/{subresource}"
        return base


DEPLOYMENTS = ResourceRef("apps", "v1", "deployments")
PODS = ResourceRef("", "v1", "pods")
SERVICES = ResourceRef("", "v1", "services")
ENDPOINTS = ResourceRef("", "v1", "endpoints")
ENDPOINT_SLICES = ResourceRef("discovery.k8s.io", "v1", "endpointslices")
CONFIGMAPS = ResourceRef("", "v1", "configmaps")
SECRETS = ResourceRef("", "v1", "secrets")
NAMESPACES = ResourceRef("", "v1", "namespaces", namespaced=False)
EVENTS = ResourceRef("", "v1", "events")


class KubeClient:
    """JSON in, JSON out; every error is a :class:`KubeError` with the API's status code."""

    def __init__(
        self, kubeconfig: str | None = None, context: str | None = None, timeout: float = 10.0
    ) -> None:
        configuration = k8s_client.Configuration()
        if kubeconfig is None:
            try:
                k8s_config.load_incluster_config(client_configuration=configuration)
            except k8s_config.ConfigException:
                k8s_config.load_kube_config(client_configuration=configuration, context=context)
        else:
            k8s_config.load_kube_config(
                config_file=kubeconfig, context=context, client_configuration=configuration
            )
        headers = {"Accept": "application/json"}
        token = configuration.api_key.get("authorization") or configuration.api_key.get("BearerToken")
        if token:
            headers["Authorization"] = token if token.startswith("Bearer ") else f"Bearer {token}"
        verify: Any = configuration.verify_ssl
        if verify and configuration.ssl_ca_cert:
            verify = configuration.ssl_ca_cert
        cert = (configuration.cert_file, configuration.key_file) if configuration.cert_file else None
        self.server = configuration.host.rstrip("/")
        self._http = httpx.Client(
            base_url=self.server, headers=headers, verify=verify, cert=cert, timeout=timeout
        )

    def close(self) -> None:
        self._http.close()

    def _request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, Any] | None = None,
        content_type: str | None = None,
    ) -> Obj:
        headers = {"Content-Type": content_type} if content_type else None
        response = self._http.request(method, path, json=json, params=params, headers=headers)
        if response.status_code >= 400:
            try:
                body = response.json()
                message = body.get("message", response.text)
            except ValueError:
                body, message = {}, response.text
            raise KubeError(response.status_code, message, body)
        if not response.content:
            return {}
        result: Obj = response.json()
        return result

    def get(self, ref: ResourceRef, namespace: str | None, name: str) -> Obj | None:
        try:
            return self._request("GET", ref.path(namespace, name))
        except KubeError as exc:
            if exc.status == 404:
                return None
            raise

    def list(
        self, ref: ResourceRef, namespace: str | None = None, label_selector: str | None = None
    ) -> list[Obj]:
        params = {"labelSelector": label_selector} if label_selector else None
        items: list[Obj] = self._request("GET", ref.path(namespace), params=params).get("items") or []
        return items

    def create(self, ref: ResourceRef, namespace: str | None, body: Obj) -> Obj:
        return self._request("POST", ref.path(namespace), json=body)

    def merge_patch(
        self, ref: ResourceRef, namespace: str | None, name: str, patch: Obj, subresource: str | None = None
    ) -> Obj:
        return self._request(
            "PATCH",
            ref.path(namespace, name, subresource),
            json=patch,
            content_type="application/merge-patch+json",
        )

    def replace(self, ref: ResourceRef, namespace: str | None, name: str, body: Obj) -> Obj:
        return self._request("PUT", ref.path(namespace, name), json=body)

    def delete(self, ref: ResourceRef, namespace: str | None, name: str) -> None:
        try:
            self._request("DELETE", ref.path(namespace, name))
        except KubeError as exc:
            if exc.status != 404:
                raise

    def upsert(self, ref: ResourceRef, namespace: str, body: Obj) -> Obj:
        """Create the object, or merge-patch it when it exists."""
        name = body["metadata"]["name"]
        try:
            return self.create(ref, namespace, body)
        except KubeError as exc:
            if exc.status != 409:
                raise
        return self.merge_patch(ref, namespace, name, body)

    def iter_all(self, refs: list[ResourceRef]) -> Iterator[tuple[ResourceRef, Obj]]:
        for ref in refs:
            for item in self.list(ref):
                yield ref, item
