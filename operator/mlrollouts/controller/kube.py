"""One Kubernetes client for the operator, the CLI and the playground's tools: plain JSON objects of
any group and kind in and out.

:class:`Kube` (asyncio) is what the operator uses next to kopf; :class:`SyncKube` serves the CLI and
the playground's processes. They share everything but the transport: connection settings (the
in-cluster service account or a kubeconfig context, read by the ``kubernetes`` config loader), each
kind's plural and scope from API discovery (cached per group-version), paths, and one error type.
Every operation is written once, as a generator that yields the HTTP calls it needs and is sent their
responses; each class only carries those calls over its own httpx client.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import ssl
import time
from collections.abc import Generator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self, TypeVar
from urllib.parse import quote

import httpx
from kubernetes import client as k8s_client
from kubernetes import config as k8s_config

from mlrollouts import __version__

Obj = dict[str, Any]
Items = list[Obj]
T = TypeVar("T")
# An operation: yields the calls it needs, is sent each call's response, returns its result.
Operation = Generator["Call", httpx.Response, T]

FIELD_MANAGER = "mlrollouts-operator"
USER_AGENT = f"mlrollouts/{__version__}"
SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
MERGE_PATCH = "application/merge-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"

log = logging.getLogger("mlrollouts.controller")


class KubeError(Exception):
    """The API server answered with an error status. ``body`` is its ``Status`` object (``{}`` when
    it sent none), ``message`` the server's own words."""

    def __init__(self, status: int, message: str, body: Obj | None = None, call: str = "") -> None:
        super().__init__(f"{status}: {call}: {message}" if call else f"{status}: {message}")
        self.status = status
        self.message = message
        self.body = body or {}
        self.call = call


# --- connection settings -------------------------------------------------------------------------


class BearerToken(httpx.Auth):
    """The config loader's token. The loader renews expiring credentials (projected service-account
    tokens, exec and OIDC plugins) when asked, but asking costs a third of a millisecond, so it is
    asked once a minute, and again when the server answers 401."""

    RECHECK_SECONDS = 60.0

    def __init__(self, configuration: k8s_client.Configuration) -> None:
        self._configuration = configuration
        self._header: str | None = None
        self._asked_at = -math.inf

    def _authorization(self, renew: bool = False) -> str | None:
        if renew or time.monotonic() - self._asked_at > self.RECHECK_SECONDS:
            token = self._configuration.get_api_key_with_prefix("BearerToken", alias="authorization")
            if not token:
                self._header = None
            elif token[:7].lower() == "bearer ":  # the in-cluster loader writes "bearer <token>"
                self._header = token
            else:
                self._header = f"Bearer {token}"
            self._asked_at = time.monotonic()
        return self._header

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        header = self._authorization()
        if header is None:
            yield request
            return
        request.headers["Authorization"] = header
        response = yield request
        if response.status_code == 401:  # refused before anything was done: safe to send again
            renewed = self._authorization(renew=True)
            if renewed is not None and renewed != header:
                request.headers["Authorization"] = renewed
                yield request


@dataclass(frozen=True)
class Connection:
    """Where the API server is, how to reach it, and the namespace the credentials default to."""

    server: str
    namespace: str = "default"
    verify: ssl.SSLContext | bool = False
    auth: httpx.Auth | None = None
    proxy: str | None = None
    user_agent: str = USER_AGENT

    @classmethod
    def load(
        cls,
        kubeconfig: str | None = None,
        context: str | None = None,
        *,
        prefer_in_cluster: bool = True,
        user_agent: str = USER_AGENT,
    ) -> Connection:
        """A named kubeconfig or context is used alone. Otherwise the service account of the pod and
        the default kubeconfig (``$KUBECONFIG`` or ``~/.kube/config``) are tried in turn, the pod's
        first when ``prefer_in_cluster`` (as kopf does). Raises the loader's ``ConfigException``
        (of the kubeconfig) when nothing loads."""
        configuration = k8s_client.Configuration()
        namespace = _load_configuration(configuration, kubeconfig, context, prefer_in_cluster)
        return cls(
            server=configuration.host.rstrip("/"),
            namespace=namespace or "default",
            verify=_tls(configuration),
            auth=BearerToken(configuration),
            proxy=configuration.proxy or None,
            user_agent=user_agent,
        )

    def http_options(self, timeout: float) -> dict[str, Any]:
        """Keyword arguments for ``httpx.Client`` and ``httpx.AsyncClient``."""
        return {
            "base_url": self.server,
            "verify": self.verify,
            "auth": self.auth,
            "proxy": self.proxy,
            "timeout": timeout,
            "headers": {"Accept": "application/json", "User-Agent": self.user_agent},
        }


def _load_configuration(
    configuration: k8s_client.Configuration,
    kubeconfig: str | None,
    context: str | None,
    prefer_in_cluster: bool,
) -> str | None:
    """Fill ``configuration``; returns the default namespace of what was loaded."""

    def from_kubeconfig() -> str | None:
        k8s_config.load_kube_config(
            config_file=kubeconfig, context=context, client_configuration=configuration
        )
        contexts, active = k8s_config.list_kube_config_contexts(config_file=kubeconfig)
        chosen = next((c for c in contexts if c["name"] == context), None) if context else active
        return ((chosen or {}).get("context") or {}).get("namespace")

    def from_pod() -> str | None:
        k8s_config.load_incluster_config(client_configuration=configuration)
        if SERVICE_ACCOUNT_NAMESPACE.exists():
            return SERVICE_ACCOUNT_NAMESPACE.read_text().strip()
        return None

    if kubeconfig or context:
        return from_kubeconfig()
    try:
        return from_pod() if prefer_in_cluster else from_kubeconfig()
    except k8s_config.ConfigException as first:
        try:
            return from_kubeconfig() if prefer_in_cluster else from_pod()
        except k8s_config.ConfigException as second:
            # the kubeconfig's complaint is the one a person can act on
            raise (second if prefer_in_cluster else first) from None


def _tls(configuration: k8s_client.Configuration) -> ssl.SSLContext | bool:
    if not configuration.host.startswith("https:"):
        return False  # plain HTTP (the playground): loading a CA bundle would only cost time
    ca = configuration.ssl_ca_cert
    context = ssl.create_default_context(cafile=ca) if ca else httpx.create_ssl_context()
    if not configuration.verify_ssl:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if configuration.cert_file and configuration.key_file:
        context.load_cert_chain(configuration.cert_file, configuration.key_file)
    return context


# --- paths and discovery -------------------------------------------------------------------------


def group_version_path(api_version: str) -> str:
    """``/api/v1`` for the core group, ``/apis/<group>/<version>`` for every other one."""
    return f"/apis/{api_version}" if "/" in api_version else f"/api/{api_version}"


@dataclass(frozen=True)
class Resource:
    """Where a kind lives in the REST API, as discovery reports it."""

    api_version: str
    kind: str
    plural: str
    namespaced: bool

    def path(
        self, namespace: str | None = None, name: str | None = None, subresource: str | None = None
    ) -> str:
        """The collection (in ``namespace``, or in all namespaces when it is ``None``) or one object.
        A cluster-scoped kind ignores ``namespace``."""
        parts = [group_version_path(self.api_version)]
        if self.namespaced and namespace:
            parts.append(f"namespaces/{quote(namespace, safe='')}")
        elif self.namespaced and name:
            raise ValueError(f"{self.kind} {name!r}: a namespace is required (the kind is namespaced)")
        parts.append(self.plural)
        if name:
            parts.append(quote(name, safe=""))
        if subresource:
            parts.append(subresource)
        return "/".join(parts)

    def object_path(self, obj: Obj, named: bool = True) -> str:
        meta = obj.get("metadata") or {}
        if not meta.get("name"):
            raise ValueError(f"{self.kind}: metadata.name is required")
        if self.namespaced and not meta.get("namespace"):
            raise ValueError(
                f"{self.kind} {meta['name']!r}: metadata.namespace is required (the kind is namespaced)"
            )
        return self.path(meta.get("namespace"), meta["name"] if named else None)


def discovered_resources(api_version: str, listing: Obj) -> dict[str, Resource]:
    """The kinds of one ``APIResourceList``; subresources (``deployments/status``) are left out."""
    found: dict[str, Resource] = {}
    for entry in listing.get("resources") or []:
        if "/" not in entry["name"]:
            resource = Resource(api_version, entry["kind"], entry["name"], bool(entry.get("namespaced")))
            found.setdefault(resource.kind, resource)
    return found


def label_selector(selector: Mapping[str, str]) -> str:
    return ",".join(f"{key}={value}" for key, value in selector.items())


# --- operations, written once for both transports ------------------------------------------------


@dataclass(frozen=True)
class Call:
    """One HTTP request of an operation."""

    method: str
    path: str
    params: dict[str, str] | None = None
    body: Any = None
    content_type: str = "application/json"

    def arguments(self) -> dict[str, Any]:
        """Keyword arguments of ``httpx.Client.request`` (and of the async one)."""
        if self.body is None:
            return {"method": self.method, "url": self.path, "params": self.params}
        return {
            "method": self.method,
            "url": self.path,
            "params": self.params,
            "content": json.dumps(self.body, separators=(",", ":")).encode(),
            "headers": {"Content-Type": self.content_type},
        }

    def __str__(self) -> str:
        return f"{self.method} {self.path}"


RETRY_ATTEMPTS = 4
RETRY_WAIT_MAX = 5.0


def retry_after(call: Call, response: httpx.Response, attempt: int) -> float | None:
    """Seconds to wait before sending ``call`` again, or None to answer ``response`` as it is.

    A 429 (API priority and fairness) or a 5xx with ``Retry-After`` was not served: the call goes
    again after the wait the server asks for, as client-go does. A plain 5xx may have been served,
    so it is retried only when sending the call twice does what sending it once does: every call of
    this client but a create without a name is such (reads, server-side apply, merge patches of
    values, deletes; a named create sent again answers 409 AlreadyExists)."""
    code = response.status_code
    if attempt + 1 >= RETRY_ATTEMPTS or not (code == 429 or code >= 500):
        return None
    header = response.headers.get("Retry-After")
    try:
        asked = float(header) if header is not None else None
    except ValueError:
        asked = None
    named = (
        bool(((call.body or {}).get("metadata") or {}).get("name")) if isinstance(call.body, dict) else False
    )
    if asked is None and code != 429 and call.method == "POST" and not named:
        return None
    wait = asked if asked is not None else 0.2 * 2**attempt
    return min(max(wait, 0.0), RETRY_WAIT_MAX)


def answer(call: Call, response: httpx.Response) -> Obj:
    """The object the server sent, or :class:`KubeError` for an error status."""
    try:
        body = response.json() if response.content else {}
    except ValueError:
        body = None
    if response.status_code >= 400:
        status = body if isinstance(body, dict) else {}
        message = status.get("message") or response.text.strip() or "no details"
        raise KubeError(response.status_code, str(message), status, str(call))
    if not isinstance(body, dict):
        raise KubeError(response.status_code, "the answer is not a JSON object", {}, str(call))
    return body


class KubeOperations:
    """What :class:`Kube` and :class:`SyncKube` share: discovery, and every operation as its calls."""

    def __init__(self, http: Any, field_manager: str = FIELD_MANAGER) -> None:
        self.http = http  # httpx.AsyncClient or httpx.Client, by subclass
        self.field_manager = field_manager
        self._resources: dict[str, dict[str, Resource]] = {}

    @classmethod
    def from_environment(
        cls,
        kubeconfig: str | None = None,
        context: str | None = None,
        *,
        timeout: float = 10.0,
        field_manager: str = FIELD_MANAGER,
    ) -> Self:
        """Connected as :meth:`Connection.load` finds (the pod's service account first)."""
        return cls.connect(Connection.load(kubeconfig, context), timeout=timeout, field_manager=field_manager)

    @classmethod
    def connect(
        cls, connection: Connection, *, timeout: float = 10.0, field_manager: str = FIELD_MANAGER
    ) -> Self:
        return cls(cls.http_client(connection.http_options(timeout)), field_manager)

    @staticmethod
    def http_client(options: dict[str, Any]) -> Any:
        """The transport's own httpx client with ``options`` (:meth:`Connection.http_options`)."""
        raise NotImplementedError

    @property
    def server(self) -> str:
        return str(self.http.base_url).rstrip("/")

    def _resource(self, api_version: str, kind: str) -> Operation[Resource]:
        known = self._resources.get(api_version, {}).get(kind)
        if known is None:  # never asked, or a CRD registered since the last answer: ask again
            call = Call("GET", group_version_path(api_version))
            self._resources[api_version] = discovered_resources(api_version, answer(call, (yield call)))
            known = self._resources[api_version].get(kind)
            if known is None:
                message = f"the API server serves no kind {kind} in {api_version}"
                raise KubeError(404, message, call=str(call))
        return known

    def _served(self, api_version: str, kind: str) -> Operation[Resource | None]:
        """The kind's resource, or ``None`` when the server does not serve it."""
        try:
            return (yield from self._resource(api_version, kind))
        except KubeError as exc:
            if exc.status == 404:
                return None
            raise

    def _send(self, call: Call) -> Operation[Obj]:
        return answer(call, (yield call))

    def _send_or_none(self, call: Call) -> Operation[Obj | None]:
        response = yield call
        return None if response.status_code == 404 else answer(call, response)

    def _get(self, api_version: str, kind: str, namespace: str | None, name: str) -> Operation[Obj | None]:
        resource = yield from self._served(api_version, kind)
        if resource is None:
            return None
        return (yield from self._send_or_none(Call("GET", resource.path(namespace, name))))

    def _delete(self, api_version: str, kind: str, namespace: str | None, name: str) -> Operation[None]:
        resource = yield from self._served(api_version, kind)
        if resource is not None:
            background = {"propagationPolicy": "Background"}
            yield from self._send_or_none(Call("DELETE", resource.path(namespace, name), background))

    def _list(
        self, api_version: str, kind: str, namespace: str | None, selector: Mapping[str, str] | None
    ) -> Operation[Items]:
        resource = yield from self._resource(api_version, kind)
        params = {"labelSelector": label_selector(selector)} if selector else None
        body = yield from self._send(Call("GET", resource.path(namespace), params))
        return list(body.get("items") or [])

    def _write(self, method: str, obj: Obj, named: bool, **call: Any) -> Operation[Obj]:
        resource = yield from self._resource(obj["apiVersion"], obj["kind"])
        return (yield from self._send(Call(method, resource.object_path(obj, named), body=obj, **call)))

    def _apply(self, obj: Obj) -> Operation[Obj]:
        params = {"fieldManager": self.field_manager, "force": "true"}
        return (yield from self._write("PATCH", obj, True, params=params, content_type=APPLY_PATCH))

    def _merge_patch(
        self,
        api_version: str,
        kind: str,
        namespace: str | None,
        name: str,
        patch: Obj,
        subresource: str | None,
    ) -> Operation[Obj]:
        resource = yield from self._resource(api_version, kind)
        path = resource.path(namespace, name, subresource)
        return (yield from self._send(Call("PATCH", path, body=patch, content_type=MERGE_PATCH)))


# --- the two transports --------------------------------------------------------------------------


class Kube(KubeOperations):
    """The asyncio client (the operator's)."""

    http: httpx.AsyncClient

    @staticmethod
    def http_client(options: dict[str, Any]) -> httpx.AsyncClient:
        limits = httpx.Limits(max_connections=20, max_keepalive_connections=20)
        return httpx.AsyncClient(**options, limits=limits)

    async def close(self) -> None:
        await self.http.aclose()

    async def __aenter__(self) -> Kube:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _run(self, operation: Operation[T]) -> T:
        try:
            call = next(operation)
            while True:
                call = operation.send(await self._send_call(call))
        except StopIteration as done:
            return done.value

    async def _send_call(self, call: Call) -> httpx.Response:
        for attempt in range(RETRY_ATTEMPTS):
            response = await self.http.request(**call.arguments())
            wait = retry_after(call, response, attempt)
            if wait is None:
                break
            await asyncio.sleep(wait)
        return response

    async def resource(self, api_version: str, kind: str) -> Resource:
        """The plural and scope of ``kind`` (discovered once per group-version)."""
        return await self._run(self._resource(api_version, kind))

    async def get(self, api_version: str, kind: str, namespace: str | None, name: str) -> Obj | None:
        return await self._run(self._get(api_version, kind, namespace, name))

    async def list(
        self, api_version: str, kind: str, namespace: str | None, selector: Mapping[str, str] | None = None
    ) -> Items:
        """In ``namespace`` (all namespaces when ``None``), matching every label of ``selector``."""
        return await self._run(self._list(api_version, kind, namespace, selector))

    async def apply(self, obj: Obj) -> Obj:
        """Server-side apply as the field manager, forced: the fields it sets are its own."""
        return await self._run(self._apply(obj))

    async def create(self, obj: Obj) -> Obj:
        return await self._run(self._write("POST", obj, named=False))

    async def replace(self, obj: Obj) -> Obj:
        return await self._run(self._write("PUT", obj, named=True))

    async def merge_patch(
        self,
        api_version: str,
        kind: str,
        namespace: str | None,
        name: str,
        patch: Obj,
        subresource: str | None = None,
    ) -> Obj:
        return await self._run(self._merge_patch(api_version, kind, namespace, name, patch, subresource))

    async def delete(self, api_version: str, kind: str, namespace: str | None, name: str) -> None:
        """Delete in the background (dependents go after the object); a missing object is no error."""
        await self._run(self._delete(api_version, kind, namespace, name))


class SyncKube(KubeOperations):
    """The blocking client (the CLI's and the playground's), with the same calls as :class:`Kube`."""

    http: httpx.Client

    @staticmethod
    def http_client(options: dict[str, Any]) -> httpx.Client:
        return httpx.Client(**options)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> SyncKube:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _run(self, operation: Operation[T]) -> T:
        try:
            call = next(operation)
            while True:
                call = operation.send(self._send_call(call))
        except StopIteration as done:
            return done.value

    def _send_call(self, call: Call) -> httpx.Response:
        for attempt in range(RETRY_ATTEMPTS):
            response = self.http.request(**call.arguments())
            wait = retry_after(call, response, attempt)
            if wait is None:
                break
            time.sleep(wait)
        return response

    def resource(self, api_version: str, kind: str) -> Resource:
        """The plural and scope of ``kind`` (discovered once per group-version)."""
        return self._run(self._resource(api_version, kind))

    def get(self, api_version: str, kind: str, namespace: str | None, name: str) -> Obj | None:
        return self._run(self._get(api_version, kind, namespace, name))

    def list(
        self,
        api_version: str,
        kind: str,
        namespace: str | None = None,
        selector: Mapping[str, str] | None = None,
    ) -> Items:
        """In ``namespace`` (all namespaces when ``None``), matching every label of ``selector``."""
        return self._run(self._list(api_version, kind, namespace, selector))

    def apply(self, obj: Obj) -> Obj:
        """Server-side apply as the field manager, forced: the fields it sets are its own."""
        return self._run(self._apply(obj))

    def create(self, obj: Obj) -> Obj:
        return self._run(self._write("POST", obj, named=False))

    def replace(self, obj: Obj) -> Obj:
        return self._run(self._write("PUT", obj, named=True))

    def merge_patch(
        self,
        api_version: str,
        kind: str,
        namespace: str | None,
        name: str,
        patch: Obj,
        subresource: str | None = None,
    ) -> Obj:
        return self._run(self._merge_patch(api_version, kind, namespace, name, patch, subresource))

    def delete(self, api_version: str, kind: str, namespace: str | None, name: str) -> None:
        """Delete in the background (dependents go after the object); a missing object is no error."""
        self._run(self._delete(api_version, kind, namespace, name))
