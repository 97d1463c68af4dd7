"""The local playground: the real operator and data plane on one machine, without Docker or a cluster.

``Playground`` starts and supervises, as child processes:

- the Kubernetes API emulator (``mlrollouts local apiserver``) on a loopback port, with a kubeconfig
  written to ``<state>/kubeconfig`` (point ``kubectl`` at it);
- the CRDs, applied from the API models;
- Prometheus (the ``prometheus`` binary on PATH), scraping every ready process through the file
  service discovery that the process kubelet keeps current;
- the process kubelet (``python -m mlrollouts.local.kubelet``), which runs Deployments as processes,
  or with ``runtime="podman"`` as containers of their images (see :mod:`mlrollouts.local.containers`);
- the operator (``mlrollouts operator run``) with the playground's Prometheus as its default; with
  ``operator=False`` none is started (the operator's own Deployment, applied to the emulator, runs
  as a container instead).

Crashed children other than the API emulator are restarted with back-off (1 s doubling to 30 s; a
child that ran ``backoff_reset`` seconds, 10 minutes by default, starts again from 1 s, as the kubelet
does); the emulator holds all state in memory, so its loss ends the playground. ``stop`` ends
everything with SIGTERM (then SIGKILL); every child also gets SIGTERM when the supervisor ends in any
other way (see :mod:`mlrollouts.local.lifeline`).

The playground's files live in a state directory: ``--state-dir``, or per user
``$XDG_STATE_HOME/mlrollouts`` (``~/.local/state/mlrollouts``), so that ``mlrollouts local status``
finds it from any directory.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mlrollouts.controller.kube import KubeError, SyncKube
from mlrollouts.local.lifeline import die_with_parent

BACKOFF_MAX = 30.0
BACKOFF_RESET = 600.0
PROMETHEUS_INSTALL_HINT = (
    "apt-get install -y prometheus  (Debian/Ubuntu; or put the prometheus binary on PATH)"
)
RUNTIMES = ("process", "podman")


class PlaygroundError(RuntimeError):
    """The playground cannot start; the message says what to do."""


def default_state_dir() -> Path:
    """The per-user state directory: ``$XDG_STATE_HOME/mlrollouts``, else ``~/.local/state/mlrollouts``."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "mlrollouts"


def locate_state_dir(explicit: Path | None = None) -> Path:
    """The state directory a command means: ``explicit``; else the one of the kubeconfig named by
    ``$KUBECONFIG`` when that is a playground's; else the per-user default."""
    if explicit is not None:
        return explicit
    for kubeconfig in filter(None, os.environ.get("KUBECONFIG", "").split(os.pathsep)):
        candidate = Path(kubeconfig).expanduser().resolve().parent
        if (candidate / "state.json").exists():
            return candidate
    return default_state_dir()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def http_ok(url: str, timeout: float = 1.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return 200 <= resp.status < 300
    except (urllib.error.URLError, OSError, ValueError):
        return False


@dataclass
class Child:
    """A supervised child process."""

    name: str
    argv: list[str]
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)
    restartable: bool = True
    popen: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    crashes_in_a_row: int = 0
    """Exits since the child last ran ``backoff_reset`` seconds: the exponent of its back-off."""
    started_at: float = 0.0
    next_start: float = 0.0

    def start(self) -> None:
        env = dict(os.environ)
        env.update(self.env)
        with open(self.log_path, "ab") as log:
            self.popen = subprocess.Popen(
                self.argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                stdin=subprocess.DEVNULL,
                preexec_fn=die_with_parent(),
            )
        self.started_at = time.monotonic()

    def backoff(self, now: float, reset_after: float) -> float:
        """Record an exit seen at ``now``; the delay before the next start."""
        if now - self.started_at >= reset_after:
            self.crashes_in_a_row = 0
        self.restarts += 1
        self.crashes_in_a_row += 1
        return min(BACKOFF_MAX, 2.0 ** min(self.crashes_in_a_row - 1, 5))

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def stop(self, grace: float = 10.0) -> None:
        if self.popen is None or self.popen.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            self.popen.send_signal(signal.SIGTERM)
        try:
            self.popen.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                self.popen.kill()
            self.popen.wait(timeout=5)


class Playground:
    """Start, supervise and stop the playground's processes (see the module docstring)."""

    def __init__(
        self,
        state_dir: Path | None = None,
        *,
        scrape_interval: str = "1s",
        operator_tick: float = 0.5,
        operator_args: list[str] | None = None,
        backoff_reset: float = BACKOFF_RESET,
        runtime: str = "process",
        operator: bool = True,
    ) -> None:
        """``backoff_reset``: seconds a child must run for its restart back-off to start again from 1 s.
        ``runtime``: how the kubelet runs containers (``process`` or ``podman``); ``operator``: start
        the operator as a process of the playground."""
        if runtime not in RUNTIMES:
            raise PlaygroundError(f"runtime: {runtime!r} is not one of {', '.join(RUNTIMES)}")
        self.runtime = runtime
        self.run_operator = operator
        self.state_dir = (state_dir or default_state_dir()).resolve()
        self.backoff_reset = backoff_reset
        self.kubeconfig = self.state_dir / "kubeconfig"
        self.logs = self.state_dir / "logs"
        self.pod_logs = self.state_dir / "work" / "pods"
        self.scrape_interval = scrape_interval
        self.operator_tick = operator_tick
        self.operator_args = operator_args or []
        self.children: list[Child] = []
        self.api_url = ""
        self.prometheus_url = ""
        self.operator_metrics_url = ""

    # ----------------------------------------------------------------- start
    def start(self, timeout: float = 90.0) -> Playground:
        prometheus = shutil.which("prometheus")
        if prometheus is None:
            raise PlaygroundError(f"the playground needs Prometheus: {PROMETHEUS_INSTALL_HINT}")
        if self.runtime == "podman":
            from mlrollouts.local.containers import INSTALL_HINT, find_podman

            if find_podman() is None:
                raise PlaygroundError(f"--runtime podman needs podman on PATH: {INSTALL_HINT}")
        if self.state_dir.exists():
            for stale in ("kubeconfig", "work", "prometheus"):
                path = self.state_dir / stale
                if path.is_dir():
                    shutil.rmtree(path)
                elif path.exists():
                    path.unlink()
        self.logs.mkdir(parents=True, exist_ok=True)
        try:
            self._start_apiserver(timeout)
            self._apply_crds()
            self._start_prometheus(prometheus, timeout)
            self._start_kubelet()
            if self.run_operator:
                self._start_operator()
            self._write_state()
        except BaseException:
            self.stop()
            raise
        return self

    def _python(self, *args: str) -> list[str]:
        return [sys.executable, *args]

    def _add(self, child: Child) -> Child:
        child.start()
        self.children.append(child)
        return child

    def _start_apiserver(self, timeout: float) -> None:
        port = free_port()
        self.api_url = f"http://127.0.0.1:{port}"
        child = self._add(
            Child(
                "apiserver",
                self._python(
                    "-m",
                    "mlrollouts.cli.main",
                    "local",
                    "apiserver",
                    "--port",
                    str(port),
                    "--kubeconfig",
                    str(self.kubeconfig),
                    "--audit-log",
                    str(self.logs / "audit.jsonl"),
                    "--pod-logs-dir",
                    str(self.pod_logs),
                ),
                self.logs / "apiserver.log",
                restartable=False,
            )
        )
        self._wait(
            lambda: self.kubeconfig.exists() and http_ok(f"{self.api_url}/readyz"),
            timeout,
            "the API emulator",
            child,
        )

    def _apply_crds(self) -> None:
        from mlrollouts.api.crd import all_crds

        with SyncKube.from_environment(str(self.kubeconfig)) as kube:
            for crd in all_crds():
                try:
                    kube.create(crd)
                except KubeError as exc:
                    if exc.status != 409:
                        raise
            with contextlib.suppress(KubeError):
                kube.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default"}})

    def _start_prometheus(self, binary: str, timeout: float) -> None:
        workdir = self.state_dir / "prometheus"
        workdir.mkdir(parents=True, exist_ok=True)
        self.sd_file = workdir / "targets.json"
        self.sd_file.write_text("[]")
        config = {
            "global": {"scrape_interval": self.scrape_interval, "evaluation_interval": self.scrape_interval},
            "scrape_configs": [
                {
                    "job_name": "playground",
                    "scrape_interval": self.scrape_interval,
                    "scrape_timeout": self.scrape_interval,
                    "file_sd_configs": [{"files": [str(self.sd_file)], "refresh_interval": "1s"}],
                }
            ],
        }
        (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
        port = free_port()
        self.prometheus_url = f"http://127.0.0.1:{port}"
        child = self._add(
            Child(
                "prometheus",
                [
                    binary,
                    f"--config.file={workdir / 'prometheus.yml'}",
                    f"--storage.tsdb.path={workdir / 'data'}",
                    f"--web.listen-address=127.0.0.1:{port}",
                    "--storage.tsdb.retention.time=2h",
                    "--log.level=warn",
                ],
                self.logs / "prometheus.log",
            )
        )
        self._wait(lambda: http_ok(f"{self.prometheus_url}/-/ready"), timeout, "Prometheus", child)

    def _start_kubelet(self) -> None:
        # no cluster DNS here: the kubelet's proxy serves http://<service>.<namespace>.svc names
        self.service_proxy_url = f"http://127.0.0.1:{free_port()}"
        self._add(
            Child(
                "kubelet",
                self._python(
                    "-m",
                    "mlrollouts.local.kubelet",
                    "--kubeconfig",
                    str(self.kubeconfig),
                    "--workdir",
                    str(self.state_dir / "work"),
                    "--prometheus-sd-file",
                    str(self.sd_file),
                    "--service-proxy-port",
                    self.service_proxy_url.rsplit(":", 1)[1],
                    # no cluster DNS here: routers reach Services through their Endpoints
                    "--env",
                    "MLROUTER_RESOLVE_ENDPOINTS=true",
                    "--runtime",
                    self.runtime,
                ),
                self.logs / "kubelet.log",
            )
        )

    def _start_operator(self) -> None:
        port = free_port()
        self.operator_metrics_url = f"http://127.0.0.1:{port}/metrics"
        self._add(
            Child(
                "operator",
                self._python(
                    "-m",
                    "mlrollouts.cli.main",
                    "operator",
                    "run",
                    "--prometheus-url",
                    self.prometheus_url,
                    "--metrics-port",
                    str(port),
                    "--tick",
                    str(self.operator_tick),
                    *self.operator_args,
                ),
                self.logs / "operator.log",
                env={
                    "KUBECONFIG": str(self.kubeconfig),
                    "HTTP_PROXY": self.service_proxy_url,
                    "NO_PROXY": "127.0.0.1,localhost,::1",
                    # the admission webhook, registered by the operator itself (self-signed)
                    "MLROLLOUTS_WEBHOOK_PORT": str(free_port()),
                    "MLROLLOUTS_WEBHOOK_ADDR": "127.0.0.1",
                    "MLROLLOUTS_WEBHOOK_CONFIGURATION": "mlrollouts-playground",
                },
            )
        )

    def _wait(self, ready: Any, timeout: float, what: str, child: Child) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if ready():
                return
            if not child.alive():
                raise PlaygroundError(f"{what} exited during start; see {child.log_path}")
            time.sleep(0.1)
        raise PlaygroundError(f"{what} was not ready after {timeout:.0f}s; see {child.log_path}")

    def _write_state(self) -> None:
        state = {
            "pid": os.getpid(),
            "apiServer": self.api_url,
            "kubeconfig": str(self.kubeconfig),
            "prometheus": self.prometheus_url,
            "operatorMetrics": self.operator_metrics_url,
            "serviceProxy": self.service_proxy_url,
            "runtime": self.runtime,
            "logs": str(self.logs),
            "podLogs": str(self.pod_logs),
            "children": {c.name: c.popen.pid for c in self.children if c.popen is not None},
        }
        (self.state_dir / "state.json").write_text(json.dumps(state, indent=2))

    # ------------------------------------------------------------ supervise
    def child(self, name: str) -> Child:
        for child in self.children:
            if child.name == name:
                return child
        raise KeyError(name)

    def supervise_once(self) -> None:
        """Restart crashed children with back-off; raise when the API emulator is gone."""
        now = time.monotonic()
        for child in self.children:
            if child.alive():
                continue
            if not child.restartable:
                raise PlaygroundError(
                    f"{child.name} exited; the playground's state is gone (see {child.log_path})"
                )
            if child.next_start == 0.0:
                child.next_start = now + child.backoff(now, self.backoff_reset)
            elif now >= child.next_start:
                child.next_start = 0.0
                child.start()
                self._write_state()

    def run_forever(self) -> None:
        stop = {"now": False}

        def request_stop(*_: Any) -> None:
            stop["now"] = True

        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, request_stop)
        try:
            while not stop["now"]:
                self.supervise_once()
                time.sleep(0.5)
        finally:
            self.stop()

    def stop(self) -> None:
        # the operator first (so it does not act on a half-stopped world), the API emulator last
        order = {"operator": 0, "kubelet": 1, "prometheus": 2, "apiserver": 3}
        for child in sorted(self.children, key=lambda c: order.get(c.name, 0)):
            child.stop()
        state = self.state_dir / "state.json"
        with contextlib.suppress(FileNotFoundError):
            state.unlink()

    def __enter__(self) -> Playground:
        return self.start()

    def __exit__(self, *_: Any) -> None:
        self.stop()


def read_state(state_dir: Path) -> dict[str, Any] | None:
    path = state_dir / "state.json"
    if not path.exists():
        return None
    state: dict[str, Any] = json.loads(path.read_text())
    return state


def running_state(state_dir: Path) -> dict[str, Any] | None:
    """The state of the playground in ``state_dir`` if its supervisor is still running."""
    state = read_state(state_dir)
    return state if state and pid_alive(int(state["pid"])) else None


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
