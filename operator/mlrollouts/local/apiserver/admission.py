"""Validating admission webhooks, called the way a real API server calls them.

On a create, update, patch or server-side apply of an object, every webhook of every stored
``ValidatingWebhookConfiguration`` whose rules match (API group, version, resource[/subresource],
operation), whose ``namespaceSelector`` selects the object's namespace and whose ``objectSelector``
selects the object gets an ``admission.k8s.io/v1`` ``AdmissionReview`` with the object as it would be
stored (defaulted and schema-checked: the write is first run as a dry run, so a request the schema
refuses never reaches a webhook, as on a real server). Webhooks are called concurrently, each
within its ``timeoutSeconds``.

- A webhook that denies: the request fails with the webhook's code (at least 400) and the message
  ``admission webhook "<name>" denied the request: <message>``.
- A webhook that cannot be called or answers nonsense: with ``failurePolicy: Fail`` (the default)
  the request fails with 500 ``failed calling webhook "<name>": ...``; with ``Ignore`` it goes on.
- Warnings of every webhook called reach the client as ``Warning: 299 - "<text>"`` headers.

Deletes and connects are not sent to webhooks; ``clientConfig.service`` is reached at
``https://<name>.<namespace>.svc:<port><path>`` unless the emulator is given a resolver.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import ssl
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import aiohttp
import aiohttp.web
import attrs
import yaml
from kmock import Request

from .errors import ApiError
from .resources import ResourceType
from .selectors import parse_label_selector

log = logging.getLogger(__name__)

Obj = dict[str, Any]
ServiceResolver = Callable[[str, str, int, str], str]
"""``(namespace, name, port, path) -> URL`` of a webhook named by Service."""

CONFIGURATIONS = ("admissionregistration.k8s.io", "validatingwebhookconfigurations")
OPERATIONS = {"POST": "CREATE", "PUT": "UPDATE", "PATCH": "UPDATE"}
DEFAULT_TIMEOUT = 10
ADMIN = {"username": "system:admin", "groups": ["system:masters", "system:authenticated"]}


def cluster_dns(namespace: str, name: str, port: int, path: str) -> str:
    return f"https://{name}.{namespace}.svc:{port}{path}"


@dataclass(frozen=True)
class Attributes:
    """What the rules of a webhook are matched against."""

    rt: ResourceType
    subresource: str | None
    operation: str
    namespace: str | None
    name: str


@dataclass
class Verdict:
    """The outcome of calling the matching webhooks: a refusal (or none) and the warnings."""

    refusal: ApiError | None = None
    warnings: list[str] = field(default_factory=list)


# ------------------------------------------------------------------------------------------ matching


def rule_matches(rule: Obj, attrs_: Attributes) -> bool:
    rt = attrs_.rt
    resource = f"{rt.plural}/{attrs_.subresource}" if attrs_.subresource else rt.plural
    return (
        _listed(rule.get("apiGroups"), rt.group)
        and _listed(rule.get("apiVersions"), rt.version)
        and _listed(rule.get("operations"), attrs_.operation)
        and _resource_listed(rule.get("resources") or [], resource)
        and _scope_matches(rule.get("scope") or "*", rt.namespaced)
    )


def _listed(values: Any, value: str) -> bool:
    return isinstance(values, list) and ("*" in values or value in values)


def _resource_listed(patterns: list[str], resource: str) -> bool:
    main, _, sub = resource.partition("/")
    for pattern in patterns:
        p_main, _, p_sub = pattern.partition("/")
        if pattern == resource or pattern == "*/*":
            return True
        if pattern == "*" and not sub:
            return True
        if sub and ((p_main == main and p_sub == "*") or (p_main == "*" and p_sub == sub)):
            return True
    return False


def _scope_matches(scope: str, namespaced: bool) -> bool:
    return scope == "*" or (scope == "Namespaced") == namespaced


def selector_matches(selector: Obj | None, labels: Mapping[str, str]) -> bool:
    """A ``LabelSelector`` (``matchLabels``, ``matchExpressions``); an absent one selects everything."""
    if not selector:
        return True
    requirements = [f"{k}={v}" for k, v in (selector.get("matchLabels") or {}).items()]
    for expression in selector.get("matchExpressions") or []:
        key, operator, values = expression["key"], expression["operator"], expression.get("values") or []
        requirements.append(
            {
                "In": f"{key} in ({','.join(values)})",
                "NotIn": f"{key} notin ({','.join(values)})",
                "Exists": key,
                "DoesNotExist": f"!{key}",
            }[operator]
        )
    return parse_label_selector(",".join(requirements))(labels)


def matching_webhooks(
    configurations: list[Obj], attrs_: Attributes, namespace_labels: Mapping[str, str], objects: list[Obj]
) -> list[Obj]:
    """The webhooks to call for a request (``objects``: the new and old object, whichever exist)."""
    found = []
    for configuration in configurations:
        for webhook in configuration.get("webhooks") or []:
            if not any(rule_matches(rule, attrs_) for rule in webhook.get("rules") or []):
                continue
            if attrs_.rt.namespaced and not selector_matches(
                webhook.get("namespaceSelector"), namespace_labels
            ):
                continue
            selector = webhook.get("objectSelector")
            if not any(
                selector_matches(selector, (o.get("metadata") or {}).get("labels") or {}) for o in objects
            ):
                continue
            found.append(webhook)
    return found


# ------------------------------------------------------------------------------------------ calling


def review_request(attrs_: Attributes, new: Obj | None, old: Obj | None, dry_run: bool) -> Obj:
    rt = attrs_.rt
    resource = {"group": rt.group, "version": rt.version, "resource": rt.plural}
    kind = {"group": rt.group, "version": rt.version, "kind": rt.kind}
    request: Obj = {
        "uid": str(uuid.uuid4()),
        "kind": kind,
        "resource": resource,
        "requestKind": kind,
        "requestResource": resource,
        "name": attrs_.name,
        "operation": attrs_.operation,
        "userInfo": ADMIN,
        "object": new,
        "oldObject": old,
        "dryRun": dry_run,
        "options": {
            "apiVersion": "meta.k8s.io/v1",
            "kind": "CreateOptions" if attrs_.operation == "CREATE" else "UpdateOptions",
        },
    }
    if attrs_.namespace:
        request["namespace"] = attrs_.namespace
    if attrs_.subresource:
        request["subResource"] = attrs_.subresource
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request}


def webhook_url(webhook: Obj, resolve: ServiceResolver) -> str:
    config = webhook.get("clientConfig") or {}
    if config.get("url"):
        return str(config["url"])
    service = config.get("service") or {}
    return resolve(
        service["namespace"], service["name"], int(service.get("port") or 443), service.get("path") or ""
    )


def tls_context(webhook: Obj) -> ssl.SSLContext:
    bundle = (webhook.get("clientConfig") or {}).get("caBundle")
    if bundle:
        return ssl.create_default_context(cadata=base64.b64decode(bundle).decode("ascii"))
    return ssl.create_default_context()


class CallFailed(Exception):
    """The webhook could not be called or gave no usable answer."""


async def call_webhook(webhook: Obj, review: Obj, resolve: ServiceResolver) -> Obj:
    """The ``response`` of the webhook's AdmissionReview; raises :class:`CallFailed`."""
    url = webhook_url(webhook, resolve)
    seconds = min(max(int(webhook.get("timeoutSeconds") or DEFAULT_TIMEOUT), 1), 30)
    try:
        timeout = aiohttp.ClientTimeout(total=seconds)
        async with aiohttp.ClientSession(timeout=timeout, trust_env=False) as session:
            ssl_option = tls_context(webhook) if url.startswith("https://") else False
            async with session.post(url, json=review, ssl=ssl_option) as response:
                text = await response.text()
                if response.status != 200:
                    raise CallFailed(f'Post "{url}": the server answered {response.status}: {text[:200]}')
                answer = json.loads(text)
    except TimeoutError:
        raise CallFailed(f'Post "{url}": context deadline exceeded (timeoutSeconds: {seconds})') from None
    except (aiohttp.ClientError, OSError, ValueError) as exc:
        raise CallFailed(f'Post "{url}": {exc}') from None
    payload = answer.get("response") if isinstance(answer, dict) else None
    if not isinstance(payload, dict) or payload.get("uid") != review["request"]["uid"]:
        raise CallFailed(f'Post "{url}": the answer is not an AdmissionReview response to this request')
    return payload


def denial(name: str, payload: Obj) -> ApiError:
    status = payload.get("status") or {}
    code = int(status.get("code") or 0)
    message = status.get("message") or "without explanation"
    return ApiError(
        max(code, 400),
        status.get("reason") or "",
        f'admission webhook "{name}" denied the request: {message}',
        status.get("details"),
    )


async def judge(webhooks: list[Obj], review: Obj, resolve: ServiceResolver) -> Verdict:
    """Call ``webhooks`` concurrently; the first refusal in configuration order wins."""
    results = await asyncio.gather(*(_judge_one(w, review, resolve) for w in webhooks))
    verdict = Verdict()
    for refusal, warnings in results:
        verdict.warnings += warnings
        if refusal is not None and verdict.refusal is None:
            verdict.refusal = refusal
    return verdict


async def _judge_one(
    webhook: Obj, review: Obj, resolve: ServiceResolver
) -> tuple[ApiError | None, list[str]]:
    name = webhook.get("name", "")
    try:
        payload = await call_webhook(webhook, review, resolve)
    except CallFailed as exc:
        if webhook.get("failurePolicy", "Fail") == "Ignore":
            log.warning("failed calling webhook %r (failurePolicy Ignore): %s", name, exc)
            return None, []
        message = f'Internal error occurred: failed calling webhook "{name}": failed to call webhook: {exc}'
        return ApiError(500, "InternalError", message, None), []
    warnings = [str(w) for w in payload.get("warnings") or []]
    return (None if payload.get("allowed") else denial(name, payload)), warnings


# ------------------------------------------------------------------------------------------ the hook


Dispatch = Callable[[Request, Obj], Awaitable[aiohttp.web.StreamResponse]]


async def admitted(
    emulator: Any, request: Request, entry: Obj, dispatch: Dispatch, resolve: ServiceResolver = cluster_dns
) -> aiohttp.web.StreamResponse:
    """``dispatch`` the request once every matching webhook has admitted it."""
    found = _attributes(emulator, request)
    if found is None:
        return await dispatch(request, entry)
    attrs_, configurations = found
    store = emulator.store
    old = store.get(attrs_.rt, attrs_.namespace, attrs_.name) if attrs_.name else None
    if attrs_.operation == "UPDATE" and old is None and _is_apply(request):
        attrs_ = replace(attrs_, operation="CREATE")  # server-side apply creates what is absent
    namespace = store.get(emulator.registry.get("", "v1", "namespaces"), None, attrs_.namespace or "")
    labels = ((namespace or {}).get("metadata") or {}).get("labels") or {}
    candidates = [o for o in (old, _request_object(request)) if isinstance(o, dict)]
    webhooks = matching_webhooks(configurations, attrs_, labels, candidates)
    if not webhooks:
        return await dispatch(request, entry)
    dry = attrs.evolve(request, url=request.url.update_query(dryRun="All"))
    rehearsal = await dispatch(dry, {})
    if rehearsal.status >= 400:
        return rehearsal
    new = json.loads(rehearsal.body)  # type: ignore[attr-defined]
    dry_run = "All" in request.url.query.getall("dryRun", [])
    attrs_ = replace(attrs_, name=new["metadata"]["name"])
    verdict = await judge(webhooks, review_request(attrs_, new, old, dry_run), resolve)
    if verdict.refusal is not None:
        response: aiohttp.web.StreamResponse = _status_response(verdict.refusal)
    else:
        response = await dispatch(request, entry)
    for warning in verdict.warnings:
        response.headers.add("Warning", f'299 - "{_header_text(warning)}"')
    return response


def _attributes(emulator: Any, request: Request) -> tuple[Attributes, list[Obj]] | None:
    from .emulator import parse_resource_path

    operation = OPERATIONS.get(str(request.method.value))
    target = parse_resource_path(request.url.path)
    if operation is None or target is None or target.plural is None:
        return None
    if (operation == "CREATE") != (target.name is None):
        return None
    rt = emulator.registry.get(target.group, target.version, target.plural)
    configurations_rt = emulator.registry.get(CONFIGURATIONS[0], "v1", CONFIGURATIONS[1])
    if rt is None or configurations_rt is None:
        return None
    configurations = emulator.store.list_objects(configurations_rt, None)
    if not configurations:
        return None
    namespace = target.namespace if rt.namespaced else None
    return Attributes(rt, target.subresource, operation, namespace, target.name or ""), configurations


def _is_apply(request: Request) -> bool:
    return request.headers.get("Content-Type", "").startswith("application/apply-patch")


def _request_object(request: Request) -> Any:
    """The object the request sends (for objectSelector); a patch only has the labels it changes."""
    if request.data is not None:
        return request.data
    try:
        return yaml.safe_load(request.body)
    except yaml.YAMLError:
        return None


def _status_response(error: ApiError) -> aiohttp.web.Response:
    body = json.dumps(error.to_status(), separators=(",", ":")).encode()
    return aiohttp.web.Response(body=body, status=error.status, headers={"Content-Type": "application/json"})


def _header_text(warning: str) -> str:
    """A warning as an HTTP header value: one line, quotes escaped (RFC 7234 warn-text)."""
    return " ".join(warning.split()).replace("\\", "\\\\").replace('"', '\\"')
