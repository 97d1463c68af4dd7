"""The HTTP face of the emulator: a ``kmock.KubernetesEmulator`` subclass that serves the Kubernetes API.

What comes from kmock: request capture and parsing (``kmock.Request``: method, URL, params, headers,
body), the record of requests (``emulator.requests``), the ``KubernetesError`` family used for
``Status`` errors, and its DSL, so a test can still inject a reaction before the emulator answers
(``emulator['get /api/v1/namespaces/default/configmaps'] << 500``).

What is our own, and why: kmock's emulator keeps objects as merged dicts with no
``resourceVersion``, generation, status subresource or change log, watches always replay every
object, its URL parser reads ``/api/v1/namespaces/<name>`` as a namespace prefix rather than the
``namespaces`` resource, and its server patches aiohttp's DNS resolution process-wide. So the state
(:mod:`.store`), the URL routing, discovery, patching, validation, watches and the TCP listener
are implemented here, in the same handler.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import json
import logging
import re
import time
from pathlib import Path
from typing import Any

import aiohttp.web
import attrs
import kmock
import yaml
from kmock import KubernetesEmulator, Request
from kmock._internal import apps

from . import admission, errors, openapi, patching, podlog, protobuf, selectors, tables
from .errors import ApiError
from .faults import FaultInjector
from .resources import Registry, ResourceType, aggregated_entry
from .store import Change, Store

log = logging.getLogger(__name__)

SERVER_VERSION = {
    "major": "1",
    "minor": "32",
    "gitVersion": "v1.32.0-mlrollouts",
    "gitCommit": "0000000000000000000000000000000000000000",
    "gitTreeState": "clean",
    "buildDate": "2026-01-01T00:00:00Z",
    "goVersion": "go1.23.4",
    "compiler": "gc",
    "platform": "linux/amd64",
}

PATCH_TYPES = (
    "application/json-patch+json",
    "application/merge-patch+json",
    "application/strategic-merge-patch+json",
    "application/apply-patch+yaml",
)
_OPENAPI_V2_PROTOBUF = "application/com.github.proto-openapi.spec.v2.v1.0+protobuf"
_TRUE = ("true", "1")
_AGGREGATED = "g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
_AGGREGATED_TYPE = "application/json;" + _AGGREGATED
_ACTIONS = {
    ("GET", False): kmock.action.LIST,
    ("GET", True): kmock.action.FETCH,
    ("POST", False): kmock.action.CREATE,
    ("PATCH", True): kmock.action.UPDATE,
    ("PUT", True): kmock.action.UPDATE,
    ("DELETE", True): kmock.action.DELETE,
}


@attrs.frozen
class Target:
    """A parsed resource URL."""

    group: str
    version: str
    plural: str | None = None
    namespace: str | None = None
    name: str | None = None
    subresource: str | None = None


def parse_resource_path(path: str) -> Target | None:
    parts = [p for p in path.strip("/").split("/") if p]
    if len(parts) >= 2 and parts[0] == "api":
        group, version, rest = "", parts[1], parts[2:]
    elif len(parts) >= 3 and parts[0] == "apis":
        group, version, rest = parts[1], parts[2], parts[3:]
    else:
        return None
    if not rest:
        return Target(group, version)
    namespace = None
    if (
        rest[0] == "namespaces"
        and len(rest) >= 3
        and not (len(rest) == 3 and rest[2] in ("status", "finalize"))
    ):
        namespace, rest = rest[1], rest[2:]
    plural = rest[0]
    name = rest[1] if len(rest) > 1 else None
    subresource = "/".join(rest[2:]) or None
    return Target(group, version, plural, namespace, name, subresource)


def as_version(rt: ResourceType, obj: dict[str, Any]) -> dict[str, Any]:
    """The object as read through ``rt``'s version (custom resources convert with strategy None)."""
    if obj.get("apiVersion") == rt.api_version:
        return obj
    return {**obj, "apiVersion": rt.api_version}


def _json(data: Any, status: int = 200, content_type: str = "application/json") -> aiohttp.web.Response:
    body = json.dumps(data, separators=(",", ":")).encode()
    return aiohttp.web.Response(body=body, status=status, headers={"Content-Type": content_type})


@attrs.define(kw_only=True)
class ApiEmulator(KubernetesEmulator):
    """A Kubernetes API server in memory, good enough for kopf, the ``kubernetes`` client and kubectl."""

    history_limit: int = 10_000
    bookmark_interval: float = 30.0
    audit_path: Path | None = None
    request_log_limit: int = 1_000
    registry: Registry = attrs.field(factory=Registry)
    store: Store = attrs.field(init=False)
    audit_limit: int = 100_000
    # Where a process kubelet on this machine writes pod logs (served as pods/log); None: no logs.
    pod_logs_dir: Path | None = None
    # The most recent requests (all of them go to audit_path when set).
    audit: collections.deque[dict[str, Any]] = attrs.field(init=False)
    # Injected API failures (see .faults); by default from MLROLLOUTS_APISERVER_FAULTS, else none.
    faults: FaultInjector | None = attrs.field(factory=FaultInjector.from_environment)
    _closing: asyncio.Event | None = attrs.field(default=None, init=False)
    _watch_queues: set[asyncio.Queue[Change | None]] = attrs.field(factory=set, init=False)

    def __attrs_post_init__(self) -> None:
        # No kmock fallbacks: every request that no test reaction catches is served by _dispatch().
        self.audit = collections.deque(maxlen=self.audit_limit)
        self.store = Store(self.registry, history_limit=self.history_limit)
        self.store.listeners.add(self._fan_out)

    # -------------------------------------------------------------------------------------- lifecycle

    async def __aenter__(self) -> ApiEmulator:
        await super().__aenter__()
        loop = asyncio.get_running_loop()
        self.store.schedule = lambda fn: loop.call_soon(fn)
        self._closing = asyncio.Event()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close_watches()
        await super().__aexit__(*exc)

    async def close_watches(self) -> None:
        if self._closing is not None:
            self._closing.set()
        for queue in list(self._watch_queues):
            queue.put_nowait(None)

    def _fan_out(self, change: Change) -> None:
        for queue in list(self._watch_queues):
            queue.put_nowait(change)

    # -------------------------------------------------------------------------------------- entry

    async def __call__(self, raw_request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        """Parse the request with our own URL parser (kmock's fails on ``/api/v1/namespaces``)."""
        body = await raw_request.read()
        target = parse_resource_path(raw_request.path)
        resource = None
        if target is not None and target.plural is not None:
            resource = kmock.resource(group=target.group, version=target.version, plural=target.plural)
        data: Any = None
        if body:
            with contextlib.suppress(ValueError, UnicodeDecodeError):
                data = json.loads(body)
        request = Request(
            id=len(self._requests),
            raw_request=raw_request,
            url=raw_request.url,
            method=raw_request.method,
            params=dict(raw_request.query),
            headers=dict(raw_request.headers),
            cookies=dict(raw_request.cookies),
            body=body,
            text=body.decode("utf-8", errors="replace"),
            data=data,
            action=_ACTIONS.get((raw_request.method, target is not None and target.name is not None)),
            resource=resource,
            namespace=target.namespace if target else None,
            name=target.name if target else None,
            subresource=target.subresource if target else None,
        )
        self._requests.append(request)
        try:
            return await self._handle(request)
        except Exception as exc:
            log.exception("internal error serving %s %s", raw_request.method, raw_request.path)
            return await self._render_error(exc)

    async def _handle(self, request: Request) -> aiohttp.web.StreamResponse:
        if len(self._requests) > self.request_log_limit:
            del self._requests[: len(self._requests) - self.request_log_limit]
        if self._payloads:  # reactions declared through kmock's DSL take precedence
            with contextlib.suppress(NotImplementedError):
                return await apps.RawHandler._handle(self, request)
        entry = self._audit_entry(request)
        if self.faults is not None and (injected := await self.faults.inject(request, entry)) is not None:
            self._record(entry)
            return injected
        try:
            response = await admission.admitted(self, request, entry, self._dispatch)
        except ApiError as exc:
            response = _json(exc.to_status(), exc.status)
        except Exception as exc:  # a bug here must not take the server down
            log.exception("internal error serving %s %s", request.method, request.url)
            response = _json(errors.internal(repr(exc)).to_status(), 500)
        entry.setdefault("code", response.status)
        self._record(entry)
        return response

    async def _render_error(self, exc: Exception) -> aiohttp.web.StreamResponse:
        if isinstance(exc, ApiError):
            return _json(exc.to_status(), exc.status)
        return _json(errors.internal(repr(exc)).to_status(), 500)

    def _audit_entry(self, request: Request) -> dict[str, Any]:
        target = parse_resource_path(request.url.path)
        entry: dict[str, Any] = {"time": time.time(), "method": str(request.method.value)}
        if target is None or target.plural is None:
            entry.update(verb=str(request.method.value).lower(), path=request.url.path)
            return entry
        method = str(request.method.value)
        if method == "GET":
            verb = "watch" if request.params.get("watch") in _TRUE else ("get" if target.name else "list")
        else:
            verb = {"POST": "create", "PUT": "update", "PATCH": "patch"}.get(method, "")
            if method == "DELETE":
                verb = "delete" if target.name else "deletecollection"
        entry.update(
            verb=verb,
            apiGroup=target.group,
            apiVersion=target.version,
            resource=target.plural,
            subresource=target.subresource or "",
            namespace=target.namespace or "",
            name=target.name or "",
            userAgent=request.headers.get("User-Agent", ""),
        )
        if user := _bearer_identity(request.headers.get("Authorization", "")):
            entry["user"] = user
        return entry

    def _record(self, entry: dict[str, Any]) -> None:
        self.audit.append(entry)
        if self.audit_path is not None:
            with open(self.audit_path, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(entry) + "\n")

    # -------------------------------------------------------------------------------------- routing

    async def _dispatch(self, request: Request, entry: dict[str, Any]) -> aiohttp.web.StreamResponse:
        path = request.url.path.rstrip("/") or "/"
        method = str(request.method.value)
        if method == "GET" and path in ("/healthz", "/readyz", "/livez"):
            return aiohttp.web.Response(text="ok")
        if method == "GET" and path == "/version":
            return _json(SERVER_VERSION)
        if method == "GET" and path == "/":
            return _json({"paths": sorted(self._root_paths())})
        if path.startswith("/openapi/"):
            return self._serve_openapi(request, path)
        if method == "GET" and path in ("/api", "/apis") and _AGGREGATED in request.headers.get("Accept", ""):
            return _json(self._aggregated(core=path == "/api"), content_type=_AGGREGATED_TYPE)
        if method == "GET" and path == "/api":
            return _json(
                {
                    "kind": "APIVersions",
                    "versions": ["v1"],
                    "serverAddressByClientCIDRs": [
                        {"clientCIDR": "0.0.0.0/0", "serverAddress": f"{request.url.host}:{request.url.port}"}
                    ],
                }
            )
        if method == "GET" and path == "/apis":
            return _json(self._group_list())
        if method == "GET" and (match := re.fullmatch(r"/apis/([^/]+)", path)):
            return _json(self._group(match.group(1), path))
        target = parse_resource_path(path)
        if target is None:
            raise errors.no_such_resource(path)
        if target.plural is None:
            if method != "GET":
                raise errors.method_not_allowed()
            return _json(self._resource_list(target.group, target.version, path))
        rt = self.registry.get(target.group, target.version, target.plural)
        if rt is None:
            raise errors.no_such_resource(path)
        if rt.key == ("", "pods") and target.subresource == "log" and target.name and method == "GET":
            return await self._pod_log(request, rt, target.namespace, target.name)
        if target.namespace is not None and not rt.namespaced:
            raise errors.no_such_resource(path)
        if target.subresource and target.subresource not in rt.subresources:
            raise errors.no_such_resource(path)
        namespace = target.namespace if rt.namespaced else None
        dry_run = "All" in request.url.query.getall("dryRun", [])
        if method == "GET":
            if request.params.get("watch") in _TRUE:
                entry["code"] = 200
                return await self._watch(request, rt, namespace, target.name)
            if target.name is None:
                return self._list(request, rt, namespace)
            obj = self.store.get(rt, namespace, target.name)
            if obj is None:
                raise errors.not_found(rt, target.name)
            if target.subresource == "scale":
                return _json(self._scale_of(rt, obj))
            return self._object_response(request, rt, obj)
        if method == "POST":
            if target.name is not None:
                raise errors.method_not_allowed()
            body = self._body_json(request)
            self._strict_check(request, rt, body)
            created = self.store.create(rt, namespace, body, dry_run=dry_run)
            return self._object_response(request, rt, created, 201)
        if method == "DELETE":
            options = self._body_json(request, optional=True) or {}
            propagation = request.params.get("propagationPolicy") or options.get("propagationPolicy")
            if options.get("orphanDependents") is True:
                propagation = "Orphan"
            if target.name is None:
                return self._delete_collection(request, rt, namespace, propagation, dry_run)
            deleted = self.store.delete(
                rt,
                namespace,
                target.name,
                propagation=propagation,
                preconditions=options.get("preconditions"),
                dry_run=dry_run,
            )
            return self._object_response(request, rt, deleted)
        if target.name is None:
            raise errors.method_not_allowed()
        if method == "PUT":
            return self._replace(request, rt, namespace, target.name, target.subresource, dry_run)
        if method == "PATCH":
            return self._patch(request, rt, namespace, target.name, target.subresource, dry_run)
        raise errors.method_not_allowed()

    def _object_response(
        self, request: Request, rt: ResourceType, obj: dict[str, Any], status: int = 200
    ) -> aiohttp.web.Response:
        obj = as_version(rt, obj)
        if "as=Table" in request.headers.get("Accept", ""):
            table = tables.to_table(
                rt,
                [obj],
                {"resourceVersion": obj["metadata"].get("resourceVersion", "")},
                request.params.get("includeObject", "Metadata"),
            )
            return _json(table, status)
        return _json(obj, status)

    # -------------------------------------------------------------------------------------- bodies

    def _body_json(self, request: Request, optional: bool = False) -> Any:
        if not request.body:
            if optional:
                return None
            raise errors.bad_request("the request body is empty")
        content_type = request.headers.get("Content-Type", "application/json").split(";")[0].strip()
        if content_type == "application/vnd.kubernetes.protobuf":
            try:
                return protobuf.decode(request.body)
            except protobuf.ProtobufError as exc:
                raise ApiError(415, "UnsupportedMediaType", str(exc), None) from None
        try:
            if content_type.endswith("yaml"):
                return patching.load_body(request.body)
            return json.loads(request.body)
        except (ValueError, yaml.YAMLError) as exc:
            raise errors.bad_request(f"the request body is not valid {content_type}: {exc}") from None

    def _strict_check(self, request: Request, rt: ResourceType, body: Any) -> None:
        """``fieldValidation=Strict`` rejects unknown fields of custom resources instead of pruning them."""
        mode = request.params.get("fieldValidation", "")
        if mode != "Strict" or not rt.is_custom or not rt.schema or not isinstance(body, dict):
            return
        from . import schema

        _, unknown = schema.prune_and_default(body, rt.schema)
        if unknown:
            fields = ", ".join(f'unknown field "{u}"' for u in unknown)
            raise errors.bad_request(
                f'{rt.kind} in version "{rt.version}" cannot be handled as a {rt.kind}: '
                f"strict decoding error: {fields}"
            )

    # -------------------------------------------------------------------------------------- writes

    def _replace(
        self,
        request: Request,
        rt: ResourceType,
        namespace: str | None,
        name: str,
        subresource: str | None,
        dry_run: bool,
    ) -> aiohttp.web.Response:
        body = self._body_json(request)
        if not isinstance(body, dict):
            raise errors.bad_request("the body of the request must be a JSON object")
        self._strict_check(request, rt, body)
        if subresource == "scale":
            return self._set_scale(rt, namespace, name, (body.get("spec") or {}).get("replicas"), dry_run)

        def compute(old: dict[str, Any]) -> dict[str, Any]:
            return body

        updated = self.store.update(
            rt, namespace, name, compute, subresource=subresource, dry_run=dry_run, require_rv=rt.is_custom
        )
        return self._object_response(request, rt, updated)

    def _patch(
        self,
        request: Request,
        rt: ResourceType,
        namespace: str | None,
        name: str,
        subresource: str | None,
        dry_run: bool,
    ) -> aiohttp.web.Response:
        content_type = request.headers.get("Content-Type", "").split(";")[0].strip()
        if content_type not in PATCH_TYPES or (content_type == PATCH_TYPES[2] and rt.is_custom):
            accepted = [t for t in PATCH_TYPES if not (rt.is_custom and t == PATCH_TYPES[2])]
            raise errors.unsupported_media_type(content_type, accepted)
        body = self._body_json(request)
        if content_type == "application/apply-patch+yaml":
            return self._apply(request, rt, namespace, name, subresource, body, dry_run)
        self._strict_check(request, rt, body)
        if subresource == "scale":
            obj = self.store.get(rt, namespace, name)
            if obj is None:
                raise errors.not_found(rt, name)
            scale = self._patched(content_type, self._scale_of(rt, obj), body)
            return self._set_scale(rt, namespace, name, (scale.get("spec") or {}).get("replicas"), dry_run)

        def compute(old: dict[str, Any]) -> Any:
            return self._patched(content_type, old, body)

        updated = self.store.update(rt, namespace, name, compute, subresource=subresource, dry_run=dry_run)
        return self._object_response(request, rt, updated)

    @staticmethod
    def _patched(content_type: str, old: dict[str, Any], body: Any) -> Any:
        try:
            if content_type == "application/json-patch+json":
                return patching.json_patch(old, body)
            if content_type == "application/merge-patch+json":
                if not isinstance(body, dict):
                    raise patching.PatchError("a merge patch must be a JSON object")
                return patching.merge_patch(old, body)
            return patching.strategic_merge_patch(old, body)
        except patching.PatchError as exc:
            raise ApiError(422, "Invalid", f"the patch could not be applied: {exc}", None) from None

    def _apply(
        self,
        request: Request,
        rt: ResourceType,
        namespace: str | None,
        name: str,
        subresource: str | None,
        body: Any,
        dry_run: bool,
    ) -> aiohttp.web.Response:
        if not isinstance(body, dict):
            raise errors.bad_request("an apply configuration must be an object")
        manager = request.params.get("fieldManager")
        if not manager:
            raise errors.bad_request("PATCH with apply requires a fieldManager query parameter")
        self._strict_check(request, rt, body)
        meta = body.get("metadata") or {}
        if meta.get("name") and meta["name"] != name:
            raise errors.bad_request(
                f"the name of the object ({meta['name']}) does not match the name on the URL ({name})"
            )
        applied_key = (rt.key, (namespace or "", name), f"{manager}/{subresource or ''}")
        existing = self.store.get(rt, namespace, name)
        if existing is None:
            if subresource:
                raise errors.not_found(rt, name)
            config = dict(body)
            config.setdefault("metadata", {})["name"] = name
            created = self.store.create(rt, namespace, config, dry_run=dry_run)
            if not dry_run:
                self.store.applied[applied_key] = body
            return self._object_response(request, rt, created, 201)
        previous = self.store.applied.get(applied_key)

        def compute(old: dict[str, Any]) -> dict[str, Any]:
            config = dict(body)
            config.pop("apiVersion", None)
            config.pop("kind", None)
            if isinstance(config.get("metadata"), dict):
                config["metadata"] = {k: v for k, v in config["metadata"].items() if k != "resourceVersion"}
            prev = dict(previous or {})
            return patching.apply_merge(old, config, prev, strategic=not rt.is_custom)

        updated = self.store.update(rt, namespace, name, compute, subresource=subresource, dry_run=dry_run)
        if not dry_run:
            self.store.applied[applied_key] = body
        return self._object_response(request, rt, updated)

    def _delete_collection(
        self,
        request: Request,
        rt: ResourceType,
        namespace: str | None,
        propagation: str | None,
        dry_run: bool,
    ) -> aiohttp.web.Response:
        items = self._select(request, rt, namespace)
        deleted = []
        for obj in items:
            meta = obj["metadata"]
            with contextlib.suppress(ApiError):
                deleted.append(
                    self.store.delete(
                        rt, meta.get("namespace"), meta["name"], propagation=propagation, dry_run=dry_run
                    )
                )
        return _json(self._list_body(rt, deleted))

    # -------------------------------------------------------------------------------------- scale

    def _replicas_paths(self, rt: ResourceType) -> tuple[str, str, str | None]:
        if rt.is_custom:
            crd = self.store.get(
                self.registry.by_group_resource("apiextensions.k8s.io", "customresourcedefinitions")[0],
                None,
                rt.crd or "",
            )
            for version in ((crd or {}).get("spec") or {}).get("versions") or []:
                if version.get("name") == rt.version:
                    scale = (version.get("subresources") or {}).get("scale") or {}
                    return (
                        scale.get("specReplicasPath", ".spec.replicas"),
                        scale.get("statusReplicasPath", ".status.replicas"),
                        scale.get("labelSelectorPath"),
                    )
        return ".spec.replicas", ".status.replicas", None

    def _scale_of(self, rt: ResourceType, obj: dict[str, Any]) -> dict[str, Any]:
        spec_path, status_path, selector_path = self._replicas_paths(rt)
        meta = obj["metadata"]
        selector = tables.jsonpath_value(obj, selector_path) if selector_path else None
        if selector is None and isinstance((obj.get("spec") or {}).get("selector"), dict):
            labels = obj["spec"]["selector"].get("matchLabels") or {}
            selector = ",".join(f"{k}={v}" for k, v in labels.items())
        return {
            "kind": "Scale",
            "apiVersion": "autoscaling/v1",
            "metadata": {
                k: meta[k]
                for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
                if k in meta
            },
            "spec": {"replicas": tables.jsonpath_value(obj, spec_path) or 0},
            "status": {
                "replicas": tables.jsonpath_value(obj, status_path) or 0,
                **({"selector": selector} if selector else {}),
            },
        }

    def _set_scale(
        self, rt: ResourceType, namespace: str | None, name: str, replicas: Any, dry_run: bool
    ) -> aiohttp.web.Response:
        if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
            raise errors.invalid(
                rt,
                name,
                [
                    errors.FieldError(
                        "Invalid", "spec.replicas", replicas, "must be greater than or equal to 0"
                    )
                ],
            )
        spec_path = self._replicas_paths(rt)[0]
        parts = [p for p in spec_path.strip(".").split(".") if p]

        def compute(old: dict[str, Any]) -> dict[str, Any]:
            node = old
            for part in parts[:-1]:
                node = node.setdefault(part, {})
            node[parts[-1]] = replicas
            return old

        updated = self.store.update(rt, namespace, name, compute, dry_run=dry_run)
        return _json(self._scale_of(rt, updated))

    # -------------------------------------------------------------------------------------- reads

    def _matchers(self, request: Request, rt: ResourceType, name: str | None = None) -> tuple[Any, Any]:
        labels = selectors.parse_label_selector(request.params.get("labelSelector"))

        def allowed(field: str) -> bool:
            return not rt.is_custom or field in ("metadata.name", "metadata.namespace")

        fields = selectors.parse_field_selector(request.params.get("fieldSelector"), allowed)
        if name is not None:
            by_name = fields
            fields = lambda obj: by_name(obj) and obj["metadata"].get("name") == name  # noqa: E731
        return labels, fields

    def _select(self, request: Request, rt: ResourceType, namespace: str | None) -> list[dict[str, Any]]:
        labels, fields = self._matchers(request, rt)
        return [
            obj
            for obj in self.store.list_objects(rt, namespace)
            if labels(obj["metadata"].get("labels") or {}) and fields(obj)
        ]

    def _list_body(
        self,
        rt: ResourceType,
        items: list[dict[str, Any]],
        cont: str | None = None,
        remaining: int | None = None,
    ) -> dict[str, Any]:
        meta: dict[str, Any] = {"resourceVersion": str(self.store.rv)}
        if cont:
            meta["continue"] = cont
            if remaining is not None:
                meta["remainingItemCount"] = remaining
        return {"kind": f"{rt.kind}List", "apiVersion": rt.api_version, "metadata": meta, "items": items}

    def _list(self, request: Request, rt: ResourceType, namespace: str | None) -> aiohttp.web.Response:
        items = self._select(request, rt, namespace)
        start = 0
        token = request.params.get("continue")
        if token:
            try:
                decoded = json.loads(base64.urlsafe_b64decode(token.encode()).decode())
                after = (decoded["ns"], decoded["name"])
            except (ValueError, KeyError, TypeError):
                raise errors.bad_request("continue key is not valid") from None
            start = next(
                (
                    i
                    for i, o in enumerate(items)
                    if (o["metadata"].get("namespace", ""), o["metadata"]["name"]) > after
                ),
                len(items),
            )
        limit = int(request.params.get("limit") or 0)
        page = items[start : start + limit] if limit > 0 else items[start:]
        cont = None
        remaining = None
        if limit > 0 and start + limit < len(items):
            last = page[-1]["metadata"]
            cont = base64.urlsafe_b64encode(
                json.dumps({"ns": last.get("namespace", ""), "name": last["name"]}).encode()
            ).decode()
            remaining = len(items) - start - limit
        body = self._list_body(rt, [as_version(rt, obj) for obj in page], cont, remaining)
        if "as=Table" in request.headers.get("Accept", ""):
            return _json(
                tables.to_table(rt, page, body["metadata"], request.params.get("includeObject", "Metadata"))
            )
        return _json(body)

    # -------------------------------------------------------------------------------------- watch

    async def _watch(
        self, request: Request, rt: ResourceType, namespace: str | None, name: str | None
    ) -> aiohttp.web.StreamResponse:
        labels, fields = self._matchers(request, rt, name)
        params = request.params
        rv_param = params.get("resourceVersion", "")
        send_initial = params.get("sendInitialEvents") in _TRUE
        bookmarks = params.get("allowWatchBookmarks") in _TRUE
        timeout = float(params["timeoutSeconds"]) if params.get("timeoutSeconds") else None

        def matches(obj: dict[str, Any] | None) -> bool:
            if obj is None:
                return False
            meta = obj["metadata"]
            if namespace is not None and meta.get("namespace") != namespace:
                return False
            return bool(labels(meta.get("labels") or {}) and fields(obj))

        def translate(change: Change) -> dict[str, Any] | None:
            now_in, was_in = matches(change.obj), matches(change.old)
            if change.type == "DELETED":
                return (
                    {"type": "DELETED", "object": as_version(rt, change.obj)} if (was_in or now_in) else None
                )
            if now_in and was_in:
                return {"type": "MODIFIED", "object": as_version(rt, change.obj)}
            if now_in:
                return {"type": "ADDED", "object": as_version(rt, change.obj)}
            if was_in:
                return {"type": "DELETED", "object": as_version(rt, change.obj)}
            return None

        as_table = "as=Table" in request.headers.get("Accept", "")
        columns_sent = False
        include_object = params.get("includeObject", "Metadata")

        def encode(event: dict[str, Any]) -> bytes:
            # kubectl get -w asks for Table events: one row each, column definitions in the first.
            nonlocal columns_sent
            if as_table and event["type"] in ("ADDED", "MODIFIED", "DELETED"):
                obj = event["object"]
                table = tables.to_table(
                    rt, [obj], {"resourceVersion": obj["metadata"]["resourceVersion"]}, include_object
                )
                if columns_sent:
                    table["columnDefinitions"] = []
                columns_sent = True
                event = {"type": event["type"], "object": table}
            return json.dumps(event, separators=(",", ":")).encode() + b"\n"

        queue: asyncio.Queue[Change | None] = asyncio.Queue()
        backlog: list[dict[str, Any]] = []
        error: dict[str, Any] | None = None
        # Synchronous section: snapshot and subscription happen atomically on the event loop.
        if rv_param in ("", "0") or send_initial:
            backlog = [
                {"type": "ADDED", "object": as_version(rt, obj)}
                for obj in self.store.list_objects(rt, namespace)
                if matches(obj)
            ]
            if send_initial and bookmarks:
                backlog.append(self._bookmark(rt, initial_end=True))
        else:
            try:
                since = int(rv_param)
            except ValueError:
                raise errors.bad_request(f'invalid resource version "{rv_param}"') from None
            if since < self.store.oldest_resumable():
                error = errors.gone(
                    f"too old resource version: {since} ({self.store.oldest_resumable() + 1})"
                ).to_status()
            else:
                for change in self.store.changes_since(since, rt.key):
                    event = translate(change)
                    if event is not None:
                        backlog.append(event)
        self._watch_queues.add(queue)
        response = aiohttp.web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
        response.enable_chunked_encoding()
        try:
            assert request._raw_request is not None
            await response.prepare(request._raw_request)
            if error is not None:
                await response.write(json.dumps({"type": "ERROR", "object": error}).encode() + b"\n")
                return response
            for event in backlog:
                await response.write(encode(event))
            deadline = time.monotonic() + timeout if timeout is not None else None
            next_bookmark = time.monotonic() + self.bookmark_interval
            while True:
                now = time.monotonic()
                wait = next_bookmark - now if bookmarks else None
                if deadline is not None:
                    wait = min(wait, deadline - now) if wait is not None else deadline - now
                if wait is not None and wait <= 0:
                    if deadline is not None and now >= deadline:
                        break
                    await response.write(json.dumps(self._bookmark(rt)).encode() + b"\n")
                    next_bookmark = now + self.bookmark_interval
                    continue
                try:
                    item: Change | None = await asyncio.wait_for(_next(queue), timeout=wait)
                except TimeoutError:
                    continue
                if item is None:
                    break
                if item.key != rt.key:
                    continue
                event = translate(item)
                if event is not None:
                    await response.write(encode(event))
        except (ConnectionResetError, aiohttp.ClientConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self._watch_queues.discard(queue)
        with contextlib.suppress(Exception):
            await response.write_eof()
        return response

    def _bookmark(self, rt: ResourceType, initial_end: bool = False) -> dict[str, Any]:
        meta: dict[str, Any] = {"resourceVersion": str(self.store.rv)}
        if initial_end:
            meta["annotations"] = {"k8s.io/initial-events-end": "true"}
        return {
            "type": "BOOKMARK",
            "object": {"kind": rt.kind, "apiVersion": rt.api_version, "metadata": meta},
        }

    # -------------------------------------------------------------------------------------- discovery

    def _root_paths(self) -> set[str]:
        paths = {
            "/api",
            "/api/v1",
            "/apis",
            "/version",
            "/healthz",
            "/livez",
            "/readyz",
            "/openapi/v2",
            "/openapi/v3",
        }
        for group, versions in self.registry.groups().items():
            paths.add(f"/apis/{group}")
            paths.update(f"/apis/{group}/{v}" for v in versions)
        return paths

    def _group_entry(self, group: str, versions: list[str]) -> dict[str, Any]:
        return {
            "name": group,
            "versions": [{"groupVersion": f"{group}/{v}", "version": v} for v in versions],
            "preferredVersion": {"groupVersion": f"{group}/{versions[0]}", "version": versions[0]},
        }

    def _group_list(self) -> dict[str, Any]:
        groups = self.registry.groups()
        return {
            "kind": "APIGroupList",
            "apiVersion": "v1",
            "groups": [self._group_entry(g, groups[g]) for g in sorted(groups)],
        }

    def _group(self, group: str, path: str) -> dict[str, Any]:
        groups = self.registry.groups()
        if group not in groups:
            raise errors.no_such_resource(path)
        return {"kind": "APIGroup", "apiVersion": "v1", **self._group_entry(group, groups[group])}

    def _aggregated(self, core: bool) -> dict[str, Any]:
        """Aggregated discovery (what kubectl asks for first): every group, version and resource at once."""
        groups = {"": ["v1"]} if core else self.registry.groups()
        items = []
        for group in sorted(groups):
            versions = []
            for version in groups[group]:
                types = sorted(
                    (rt for rt in self.registry.all() if rt.group == group and rt.version == version),
                    key=lambda r: r.plural,
                )
                resources = [aggregated_entry(rt) for rt in types]
                versions.append({"version": version, "resources": resources, "freshness": "Current"})
            items.append({"metadata": {"name": group, "creationTimestamp": None}, "versions": versions})
        return {
            "kind": "APIGroupDiscoveryList",
            "apiVersion": "apidiscovery.k8s.io/v2",
            "metadata": {},
            "items": items,
        }

    def _resource_list(self, group: str, version: str, path: str) -> dict[str, Any]:
        types = [rt for rt in self.registry.all() if rt.group == group and rt.version == version]
        if not types:
            raise errors.no_such_resource(path)
        return {
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": f"{group}/{version}" if group else version,
            "resources": [
                entry for rt in sorted(types, key=lambda r: r.plural) for entry in rt.discovery_entries()
            ],
        }

    def _serve_openapi(self, request: Request, path: str) -> aiohttp.web.Response:
        # OpenAPI v2 publishes no schemas: clients leave validation and defaulting to the server. The
        # v3 documents describe every kind the emulator serves (what `kubectl explain` reads).
        if path == "/openapi/v2":
            if "protobuf" in request.headers.get("Accept", ""):
                return aiohttp.web.Response(body=b"", content_type=_OPENAPI_V2_PROTOBUF)
            return _json(
                {
                    "swagger": "2.0",
                    "info": {"title": "Kubernetes", "version": SERVER_VERSION["gitVersion"]},
                    "paths": {},
                    "definitions": {},
                }
            )
        if path == "/openapi/v3" or path.startswith("/openapi/v3/"):
            document = openapi.serve(self.registry, path)
            if document is not None:
                return _json(document)
        raise errors.no_such_resource(path)

    async def _pod_log(
        self, request: Request, rt: ResourceType, namespace: str | None, name: str
    ) -> aiohttp.web.StreamResponse:
        pod = self.store.get(rt, namespace, name)
        if pod is None:
            raise errors.not_found(rt, name)
        return await podlog.serve(
            request, self.pod_logs_dir, pod, lambda: self.store.get(rt, namespace, name) is not None
        )


async def _next(queue: asyncio.Queue[Change | None]) -> Change | None:
    return await queue.get()


def _bearer_identity(header: str) -> str | None:
    """The identity a bearer token names. Nothing is authenticated here: the playground gives each
    pod's ServiceAccount the token ``system:serviceaccount:<namespace>:<name>`` so the audit log says
    which account made a call."""
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.startswith("system:serviceaccount:"):
        return None
    return token.strip()
