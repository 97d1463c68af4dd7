"""Client-side resolution of Kubernetes Service upstreams to their ready endpoints.

An upstream such as ``http://iris-5f2a1c.default.svc:80`` normally goes through cluster DNS and
kube-proxy. With endpoint resolution on (``mlserving route --resolve-endpoints``, env
``MLROUTER_RESOLVE_ENDPOINTS=true``) the router instead reads the Service and its Endpoints through
the Kubernetes API and sends requests straight to the ready pod addresses: load is balanced by the
router itself, a connection failure is retried on another pod of the same variant, and the local
playground (where pods are processes on loopback ports and there is no cluster DNS) works unchanged.

Only hosts of the form ``<service>.<namespace>.svc`` (optionally followed by the cluster domain) are
resolved; anything else is used as written. A Service that has no ready endpoint yet, or that cannot
be read, resolves to the URL as written, so the router degrades to plain DNS rather than to nothing.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import quote, urlsplit

import orjson

from mlserving.router.sources import KubeAccess

log = logging.getLogger("mlserving.router.resolve")

_SERVICE_HOST = re.compile(
    r"^(?P<name>[a-z0-9]([-a-z0-9]*[a-z0-9])?)\.(?P<ns>[a-z0-9]([-a-z0-9]*[a-z0-9])?)\.svc(\..+)?$"
)

ServiceKey = tuple[str, str, int]  # namespace, service, service port


def service_of(url: str) -> ServiceKey | None:
    """``http://name.ns.svc:80/x`` -> ``("ns", "name", 80)``; None for hosts that are not Services."""
    parts = urlsplit(url)
    match = _SERVICE_HOST.match(parts.hostname or "")
    if match is None:
        return None
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return match.group("ns"), match.group("name"), port


def ready_endpoints(service: dict[str, Any], endpoints: dict[str, Any], port: int) -> list[tuple[str, int]]:
    """The ``(ip, port)`` pairs of the ready addresses behind one port of a Service."""
    port_name = None
    for svc_port in (service.get("spec") or {}).get("ports") or []:
        if int(svc_port.get("port", 0)) == port:
            port_name = svc_port.get("name")
            break
    else:
        return []
    found: list[tuple[str, int]] = []
    for subset in endpoints.get("subsets") or []:
        ports = subset.get("ports") or []
        chosen = [p for p in ports if p.get("name") == port_name] if port_name else ports[:1]
        if not chosen and len(ports) == 1 and not ports[0].get("name"):
            chosen = ports  # a single unnamed endpoint port serves the Service port
        for address in subset.get("addresses") or []:
            for endpoint_port in chosen:
                found.append((address["ip"], int(endpoint_port["port"])))
    return sorted(set(found))


class EndpointResolver:
    """Keeps the ready endpoints of the Services named by upstream URLs, polling the API every ``interval``."""

    def __init__(self, access: KubeAccess, interval: float = 0.5) -> None:
        self.access = access
        self.interval = interval
        self._wanted: set[ServiceKey] = set()
        self._resolved: dict[ServiceKey, list[tuple[str, int]]] = {}
        self._on_change: Callable[[], None] | None = None

    def on_change(self, callback: Callable[[], None]) -> None:
        self._on_change = callback

    def want(self, urls: Iterable[str]) -> None:
        """Declare the upstream URLs in use (the current route table)."""
        self._wanted = {key for url in urls if (key := service_of(url)) is not None}

    def resolve(self, url: str) -> list[str]:
        key = service_of(url)
        if key is None:
            return [url]
        addresses = self._resolved.get(key)
        if not addresses:
            return [url]
        parts = urlsplit(url)
        tail = parts.path.rstrip("/")
        return [f"{parts.scheme}://{ip}:{port}{tail}" for ip, port in addresses]

    async def _get(self, session: Any, path: str) -> dict[str, Any] | None:
        async with session.get(f"{self.access.server}{path}", headers=self.access.headers()) as response:
            if response.status == 404:
                return None
            if response.status != 200:
                raise RuntimeError(f"GET {path}: HTTP {response.status}")
            body: dict[str, Any] = orjson.loads(await response.read())
            return body

    async def refresh(self, session: Any) -> bool:
        """Read every wanted Service and its Endpoints; True when any resolution changed."""
        changed = False
        for key in sorted(self._wanted):
            namespace, name, port = key
            base = f"/api/v1/namespaces/{quote(namespace)}"
            service = await self._get(session, f"{base}/services/{quote(name)}")
            endpoints = await self._get(session, f"{base}/endpoints/{quote(name)}")
            addresses = ready_endpoints(service, endpoints, port) if service and endpoints else []
            if self._resolved.get(key, []) != addresses:
                self._resolved[key] = addresses
                changed = True
                log.info(
                    "service %s/%s:%d resolves to %s",
                    namespace,
                    name,
                    port,
                    [f"{ip}:{p}" for ip, p in addresses] or "its DNS name (no ready endpoint)",
                )
        for key in set(self._resolved) - self._wanted:
            del self._resolved[key]
        return changed

    async def run(self) -> None:
        import aiohttp

        timeout = aiohttp.ClientTimeout(total=max(2.0, self.interval * 4))
        async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=self.access.ssl_context()), timeout=timeout
        ) as session:
            while True:
                try:
                    if await self.refresh(session) and self._on_change is not None:
                        self._on_change()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    log.warning("endpoint resolution failed: %s", exc)
                await asyncio.sleep(self.interval)
