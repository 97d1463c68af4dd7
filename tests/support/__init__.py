"""Helpers shared by the test suites: free ports, system binaries, real child processes."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

INSTALL_HINTS = {
    "prometheus": "apt-get install -y prometheus",
    "wrk": "apt-get install -y wrk",
    "hey": "apt-get install -y hey",
    "kubectl": "apt-get install -y kubectl (or download kubectl 1.32 to /usr/bin/kubectl)",
    "nginx": "apt-get install -y nginx",
    "docker": "install Docker Engine (https://docs.docker.com/engine/install/)",
    "kind": "go install sigs.k8s.io/kind@latest",
}


def require_binary(name: str) -> str:
    """Return the path of a system binary; skip the test when it is absent, fail under CI=true."""
    path = shutil.which(name)
    if path:
        return path
    hint = INSTALL_HINTS.get(name, f"install {name}")
    if IN_CI:
        pytest.fail(f"{name} is required in CI but not on PATH; install it with: {hint}")
    pytest.skip(f"{name} not found on PATH; install it with: {hint}")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(predicate, timeout: float = 20.0, interval: float = 0.05, message: str = "condition"):
    """Poll ``predicate`` until it returns a truthy value; fail with ``message`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    last_exc: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except Exception as exc:
            last_exc = exc
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {message} (last error: {last_exc!r})")


def http_ok(url: str, timeout: float = 1.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return 200 <= resp.status < 300
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
        return False


def wait_http(url: str, timeout: float = 30.0) -> None:
    wait_until(lambda: http_ok(url), timeout=timeout, message=f"HTTP 2xx from {url}")


class Proc:
    """A real child process with its output captured to a file, stopped with SIGTERM then SIGKILL."""

    def __init__(
        self,
        argv: Sequence[str],
        log_path: Path,
        env: dict[str, str] | None = None,
        cwd: str | Path | None = None,
    ) -> None:
        self.argv = list(argv)
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        full_env = dict(os.environ)
        if env:
            full_env.update(env)
        self.popen = subprocess.Popen(
            self.argv,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=full_env,
            cwd=cwd,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def output(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        with contextlib.suppress(ProcessLookupError):
            self.popen.send_signal(signal.SIGKILL)
        self.popen.wait(timeout=10)

    def stop(self, grace: float = 10.0) -> int | None:
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self.kill()
        self._log.close()
        return self.popen.returncode


@contextlib.contextmanager
def running(
    argv: Sequence[str],
    log_path: Path,
    env: dict[str, str] | None = None,
    ready_url: str | None = None,
    timeout: float = 30.0,
) -> Iterator[Proc]:
    proc = Proc(argv, log_path, env=env)
    try:
        if ready_url:
            try:
                wait_until(
                    lambda: proc.alive() and http_ok(ready_url),
                    timeout=timeout,
                    message=f"{argv[0]} ready at {ready_url}",
                )
            except AssertionError as exc:
                raise AssertionError(f"{exc}\n--- output ---\n{proc.output()[-4000:]}") from None
        yield proc
    finally:
        proc.stop()


PYTHON = sys.executable


SPECS_DIR = Path(__file__).resolve().parents[1] / "specs"
"""Contracts the project implements or validates against (Open Inference Protocol REST, Gateway API)."""
