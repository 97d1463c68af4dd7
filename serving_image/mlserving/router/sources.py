"""Where the route table comes from: a file (polled) or a ConfigMap (watched through the Kubernetes API).

Either source calls ``apply(table)`` for every valid new table and logs and skips invalid ones, so the
last good table stays in force. Both react within a second.
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import orjson

from mlserving.router.table import ROUTES_CONFIGMAP_KEY, RouteTable, RouteTableError

log = logging.getLogger("mlserving.router.sources")

Apply = Callable[[RouteTable], None]
Reject = Callable[[str], None]


class TableSource:
    """Base: turns document text into a table, applying good ones and logging bad ones."""

    origin = "route table"

    def __init__(self, apply: Apply, reject: Reject | None = None) -> None:
        self._apply = apply
        self._reject = reject
        self._last_text: str | None = None

    def offer(self, text: str | None, where: str) -> bool:
        """Parse and apply ``text`` unless it is unchanged; True when a new table was applied."""
        if text is None:
            message = f"{where}: no {ROUTES_CONFIGMAP_KEY!r} found; keeping the last good table"
            log.error("route table rejected: %s", message)
            if self._reject:
                self._reject(message)
            return False
        if text == self._last_text:
            return False
        self._last_text = text
        try:
            table = RouteTable.from_yaml(text)
        except RouteTableError as exc:
            log.error("route table rejected (%s): %s; keeping the last good table", where, exc)
            if self._reject:
                self._reject(str(exc))
            return False
        self._apply(table)
        log.info("route table applied from %s: %d route(s)", where, len(table.routes))
        return True


class FileSource(TableSource):
    """Polls a file (a mounted ConfigMap works too: its symlink swap changes the stat)."""

    def __init__(self, path: str | Path, apply: Apply, reject: Reject | None = None, interval: float = 0.2):
        super().__init__(apply, reject)
        self.path = Path(path)
        self.interval = interval
        self._stamp: tuple[int, int, int] | None = None

    def _read_if_changed(self) -> tuple[bool, str | None]:
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            if self._stamp != (0, 0, 0):
                self._stamp = (0, 0, 0)
                return True, None
            return False, None
        stamp = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
        if stamp == self._stamp:
            return False, None
        self._stamp = stamp
        return True, self.path.read_text(encoding="utf-8")

    def load_now(self) -> bool:
        changed, text = self._read_if_changed()
        return changed and self.offer(text, str(self.path))

    async def run(self) -> None:
        while True:
            try:
                changed, text = await asyncio.to_thread(self._read_if_changed)
                if changed:
                    self.offer(text, str(self.path))
            except (OSError, UnicodeDecodeError) as exc:
                log.error("cannot read route table %s: %s", self.path, exc)
            await asyncio.sleep(self.interval)


class _Gone(Exception):
    """The resourceVersion is too old (HTTP 410): list again."""


class KubeAccess:
    """Server URL, credentials and TLS settings from a kubeconfig or the in-cluster service account."""

    def __init__(self, kubeconfig: str | None = None, context: str | None = None) -> None:
        from kubernetes import client, config  # imported lazily: only the ConfigMap mode needs it

        self._configuration = client.Configuration()
        path = kubeconfig or os.environ.get("KUBECONFIG")
        if path is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
            config.load_incluster_config(client_configuration=self._configuration)  # type: ignore[no-untyped-call,unused-ignore]
        else:
            config.load_kube_config(  # type: ignore[no-untyped-call,unused-ignore]
                config_file=path, context=context, client_configuration=self._configuration
            )
        self.server = self._configuration.host.rstrip("/")

    def headers(self) -> dict[str, str]:
        cfg = self._configuration
        hook = getattr(cfg, "refresh_api_key_hook", None)
        if hook is not None:
            hook(cfg)  # in-cluster tokens rotate; the hook re-reads the projected token
        headers = {"Accept": "application/json"}
        token = cfg.get_api_key_with_prefix("authorization") or cfg.get_api_key_with_prefix("BearerToken")
        if token:
            headers["Authorization"] = token
        elif cfg.username or cfg.password:
            headers["Authorization"] = str(cfg.get_basic_auth_token())
        return headers

    def ssl_context(self) -> ssl.SSLContext | bool:
        cfg = self._configuration
        if not self.server.startswith("https"):
            return False
        context = ssl.create_default_context(cafile=cfg.ssl_ca_cert or None)
        if cfg.cert_file:
            context.load_cert_chain(cfg.cert_file, cfg.key_file)
        if not cfg.verify_ssl:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context


class ConfigMapSource(TableSource):
    """Lists then watches one ConfigMap, resuming from the last resourceVersion and re-listing on 410."""

    def __init__(
        self,
        namespace: str,
        name: str,
        access: KubeAccess,
        apply: Apply,
        reject: Reject | None = None,
        watch_seconds: int = 300,
    ) -> None:
        super().__init__(apply, reject)
        self.namespace, self.name = namespace, name
        self.access = access
        self.watch_seconds = watch_seconds
        self.where = f"configmap {namespace}/{name}"
        self._collection = f"{access.server}/api/v1/namespaces/{quote(namespace)}/configmaps"
        self._selector = f"metadata.name={name}"

    def _offer_object(self, obj: dict[str, Any]) -> None:
        data = obj.get("data") or {}
        self.offer(data.get(ROUTES_CONFIGMAP_KEY), self.where)

    async def _list(self, session: Any) -> str:
        params = {"fieldSelector": self._selector}
        async with session.get(self._collection, params=params, headers=self.access.headers()) as response:
            if response.status != 200:
                raise RuntimeError(
                    f"listing {self.where}: HTTP {response.status}: {(await response.text())[:300]}"
                )
            listing = await response.json(loads=orjson.loads, content_type=None)
        items = listing.get("items") or []
        if items:
            self._offer_object(items[0])
        else:
            log.error("%s does not exist (yet); keeping the last good table", self.where)
        return str(listing.get("metadata", {}).get("resourceVersion", ""))

    async def _watch(self, session: Any, resource_version: str) -> str:
        params = {
            "watch": "1",
            "fieldSelector": self._selector,
            "resourceVersion": resource_version,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(self.watch_seconds),
        }
        import aiohttp

        timeout = aiohttp.ClientTimeout(total=None, sock_read=self.watch_seconds + 30)
        async with session.get(
            self._collection, params=params, headers=self.access.headers(), timeout=timeout
        ) as response:
            if response.status == 410:
                raise _Gone
            if response.status != 200:
                raise RuntimeError(
                    f"watching {self.where}: HTTP {response.status}: {(await response.text())[:300]}"
                )
            async for line in response.content:
                if not line.strip():
                    continue
                event = orjson.loads(line)
                kind, obj = event.get("type"), event.get("object") or {}
                if kind == "ERROR":
                    if obj.get("code") == 410:
                        raise _Gone
                    raise RuntimeError(f"watch error on {self.where}: {obj.get('message')}")
                resource_version = obj.get("metadata", {}).get("resourceVersion") or resource_version
                if kind in ("ADDED", "MODIFIED"):
                    self._offer_object(obj)
                elif kind == "DELETED":
                    log.error("%s was deleted; keeping the last good table", self.where)
        return resource_version

    async def run(self) -> None:
        import aiohttp  # only the ConfigMap mode needs it

        backoff = 0.2
        resource_version: str | None = None
        async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=self.access.ssl_context())
        ) as session:
            while True:
                try:
                    if resource_version is None:
                        resource_version = await self._list(session)
                    resource_version = await self._watch(session, resource_version)
                    backoff = 0.2
                except _Gone:
                    log.info("%s: resourceVersion expired, listing again", self.where)
                    resource_version = None
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    log.warning("%s: %s; retrying in %.1f s", self.where, exc, backoff)
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 5.0)
                    resource_version = None
