"""Real processes for router tests: small OIP upstreams (upstream.py), real model servers of tiny affine
models (graph_testing.py), a CloudEvents sink (event_sink.py) and `mlserving route` itself."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
from graph_testing import ModelServer, affine_servers
from router_testing import SIGNING_KEY, Router, Upstream

from support import PYTHON, Proc, free_port, http_ok, wait_http, wait_until

UPSTREAM_SCRIPT = Path(__file__).with_name("upstream.py")
SINK_SCRIPT = Path(__file__).with_name("event_sink.py")


@pytest.fixture
def procs(tmp_path) -> Iterator[contextlib.ExitStack]:
    with contextlib.ExitStack() as stack:
        yield stack


def _upstream_starter(procs: contextlib.ExitStack, tmp_path: Path):
    def start(name: str, *extra: str, mode: str = "ok") -> Upstream:
        port = free_port()
        argv = [PYTHON, str(UPSTREAM_SCRIPT), "--port", str(port), "--name", name, "--mode", mode, *extra]
        proc = Proc(argv, tmp_path / f"upstream-{name}-{port}.log")
        procs.callback(proc.stop)
        url = f"http://127.0.0.1:{port}"
        if mode == "ok":
            wait_http(f"{url}/v2/health/ready")
        else:
            wait_until(lambda: _port_open(port), message=f"{name} listening")
        return Upstream(name, url, proc)

    return start


@pytest.fixture
def start_upstream(procs, tmp_path):
    return _upstream_starter(procs, tmp_path)


@pytest.fixture(scope="module")
def plain_upstreams(tmp_path_factory) -> Iterator[dict[str, Upstream]]:
    """Upstreams ``a``, ``b`` and ``c`` shared by the tests of a module that only look at routing."""
    with contextlib.ExitStack() as stack:
        start = _upstream_starter(stack, tmp_path_factory.mktemp("upstreams"))
        yield {name: start(name) for name in ("a", "b", "c")}


@pytest.fixture(scope="session")
def affine(tmp_path_factory) -> Iterator[dict[str, ModelServer]]:
    """Real model servers ``shift``, ``double`` and ``swap`` (see graph_testing.py), shared by the session."""
    with affine_servers(tmp_path_factory.mktemp("affine")) as servers:
        yield servers


@pytest.fixture
def start_sink(procs, tmp_path):
    """Start a real CloudEvents sink process; returns its base URL."""

    def start(*extra: str) -> str:
        port = free_port()
        proc = Proc([PYTHON, str(SINK_SCRIPT), "--port", str(port), *extra], tmp_path / f"sink-{port}.log")
        procs.callback(proc.stop)
        url = f"http://127.0.0.1:{port}"
        wait_http(f"{url}/received")
        return url

    return start


def _port_open(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _router_starter(procs: contextlib.ExitStack, tmp_path: Path):
    counter = iter(range(100))

    def start(
        table: dict | str,
        signing_key: str | None = SIGNING_KEY,
        extra: tuple[str, ...] = (),
        port: int | None = None,
    ) -> Router:
        index = next(counter)
        table_path = tmp_path / f"routes-{index}.yaml"
        port = port or free_port()
        router = Router(f"http://127.0.0.1:{port}", table_path, None)  # type: ignore[arg-type]
        router.write_table(table)
        env = {k: v for k, v in os.environ.items() if k != "MLROUTER_SIGNING_KEY"}
        if signing_key is not None:
            env["MLROUTER_SIGNING_KEY"] = signing_key
        argv = [PYTHON, "-m", "mlserving.cli", "route", "--config", str(table_path), "--port", str(port),
                "--host", "127.0.0.1", *extra]  # fmt: skip
        proc = Proc(argv, tmp_path / f"router-{index}.log", env=env)
        procs.callback(proc.stop)
        router.proc = proc
        deadline = time.monotonic() + 30
        while not http_ok(f"{router.url}/v2/health/live"):
            if not proc.alive() or time.monotonic() > deadline:
                raise AssertionError(f"router did not come up:\n{proc.output()[-3000:]}")
            time.sleep(0.05)
        return router

    return start


@pytest.fixture
def start_router(procs, tmp_path):
    return _router_starter(procs, tmp_path)


@pytest.fixture(scope="module")
def module_starters(tmp_path_factory) -> Iterator[SimpleNamespace]:
    """``upstream`` and ``router`` starters whose processes live as long as the test module."""
    with contextlib.ExitStack() as stack:
        directory = tmp_path_factory.mktemp("module")
        yield SimpleNamespace(
            upstream=_upstream_starter(stack, directory), router=_router_starter(stack, directory)
        )
