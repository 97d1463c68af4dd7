"""Run the emulator on a loopback TCP port: in a background thread, or in the foreground for the CLI."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, TypeVar

import aiohttp.web
import yaml

from .emulator import ApiEmulator

T = TypeVar("T")


@contextlib.asynccontextmanager
async def serve(emulator: ApiEmulator, host: str = "127.0.0.1", port: int = 0) -> AsyncIterator[str]:
    """Serve ``emulator`` on ``host:port`` (0 picks a free port) inside the running loop; yield its URL."""
    async with emulator:
        server = aiohttp.web.Server(emulator, handler_cancellation=True)
        runner = aiohttp.web.ServerRunner(server, shutdown_timeout=1.0)
        await runner.setup()
        site = aiohttp.web.TCPSite(runner, host, port, reuse_address=True)
        await site.start()
        sockets = runner.addresses
        bound_port = sockets[0][1]
        try:
            yield f"http://{host}:{bound_port}"
        finally:
            await emulator.close_watches()
            await runner.cleanup()


def kubeconfig(url: str, namespace: str = "default", name: str = "mlrollouts-local") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": name, "cluster": {"server": url}}],
        "users": [{"name": name, "user": {"token": "mlrollouts-local"}}],
        "contexts": [{"name": name, "context": {"cluster": name, "user": name, "namespace": namespace}}],
        "current-context": name,
        "preferences": {},
    }


def write_kubeconfig(path: str | Path, url: str, namespace: str = "default") -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(kubeconfig(url, namespace), sort_keys=False))
    path.chmod(0o600)
    return path


class ApiServer:
    """The emulator on a loopback port, served from a background thread.

    >>> with ApiServer(port=0) as api:
    ...     api.write_kubeconfig(tmp_path / "kubeconfig")
    ...     requests.get(api.url + "/api/v1/namespaces")
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        audit_path: str | Path | None = None,
        history_limit: int = 10_000,
        bookmark_interval: float = 30.0,
        pod_logs_dir: str | Path | None = None,
    ) -> None:
        """``pod_logs_dir``: serve ``pods/log`` from a process kubelet's pod directories under it."""
        self.host = host
        self.requested_port = port
        self.emulator = ApiEmulator(
            audit_path=Path(audit_path) if audit_path else None,
            history_limit=history_limit,
            bookmark_interval=bookmark_interval,
            pod_logs_dir=Path(pod_logs_dir) if pod_logs_dir else None,
        )
        self.url = ""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def start(self) -> ApiServer:
        self._thread = threading.Thread(target=self._run, name="mlrollouts-apiserver", daemon=True)
        self._thread.start()
        self._ready.wait(timeout=30)
        if self._error is not None:
            raise RuntimeError(f"the API emulator failed to start: {self._error!r}") from self._error
        if not self.url:
            raise RuntimeError("the API emulator did not start within 30 seconds")
        return self

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._main())
        except BaseException as exc:
            self._error = exc
            self._ready.set()
        finally:
            loop.close()

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        async with serve(self.emulator, self.host, self.requested_port) as url:
            self.url = url
            self._ready.set()
            await self._stop.wait()

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None and self._thread is not None:
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(timeout=10)
        self._thread = None

    def __enter__(self) -> ApiServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def write_kubeconfig(self, path: str | Path, namespace: str = "default") -> Path:
        return write_kubeconfig(path, self.url, namespace)

    def call(self, fn: Callable[[], T], timeout: float = 10.0) -> T:
        """Run ``fn`` on the server's loop (the store is not thread-safe) and return its result."""
        if self._loop is None:
            raise RuntimeError("the API emulator is not running")

        async def wrapper() -> T:
            return fn()

        future: concurrent.futures.Future[T] = asyncio.run_coroutine_threadsafe(wrapper(), self._loop)
        return future.result(timeout)

    @property
    def audit(self) -> list[dict[str, Any]]:
        """A copy of the audit records so far (verb, apiGroup, resource, subresource, namespace, ...)."""
        return self.call(lambda: list(self.emulator.audit))

    def compact(self) -> None:
        """Drop the change history, so that watches from older resource versions get 410 Gone."""
        self.call(self.emulator.store.compact)
