"""No playground process outlives `mlrollouts local up` or `local demo`, however they end: SIGTERM
(a cancelled CI job, `timeout`) stops the playground as Ctrl-C does, and after a SIGKILL of the
supervisor its children get SIGTERM from the kernel and take their own children down with them."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from test_kubelet import deployment

from mlrollouts.controller.kube import SyncKube
from support import require_binary, wait_until

pytestmark = pytest.mark.integration


def descendants(pid: int) -> set[int]:
    """Every live process below ``pid``, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def port_free(port: int) -> bool:
    with socket.socket() as sock:
        # connections the playground served may linger in TIME_WAIT; no one may be listening
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def playground_ports(state: dict) -> list[int]:
    urls = [state["apiServer"], state["prometheus"], state["operatorMetrics"], state["serviceProxy"]]
    return [int(url.rsplit(":", 1)[1].split("/")[0]) for url in urls]


def start(tmp_path: Path, *command: str) -> tuple[subprocess.Popen[bytes], dict]:
    state_dir = tmp_path / "state"
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlrollouts.cli.main", "local", *command, "--state-dir", str(state_dir)],
        stdout=(tmp_path / "out.log").open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )

    def ready() -> dict | None:
        path = state_dir / "state.json"
        state = json.loads(path.read_text()) if path.exists() else None
        return state if state and state["pid"] == proc.pid else None

    return proc, wait_until(ready, timeout=90, message="the playground's state file")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_local_up_leaves_no_process_and_frees_its_ports(tmp_path: Path, signum: int) -> None:
    require_binary("prometheus")
    proc, state = start(tmp_path, "up")
    try:
        with SyncKube.from_environment(state["kubeconfig"]) as kube:
            kube.create(deployment("web", 1, "hi"))
        # a pod process under the kubelet too, not only the supervisor's own children
        wait_until(lambda: len(descendants(proc.pid)) >= 5, timeout=60, message="a pod process")
        processes = descendants(proc.pid)
        os.kill(proc.pid, signum)
        proc.wait(timeout=60)
        wait_until(lambda: not any(alive(p) for p in processes), timeout=30, message="every process gone")
        ports = playground_ports(state)
        wait_until(lambda: all(port_free(p) for p in ports), timeout=10, message=f"ports {ports} free")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)


def test_sigterm_of_local_demo_stops_the_playground(tmp_path: Path) -> None:
    require_binary("prometheus")
    proc, _ = start(tmp_path, "demo", "--no-live", "--output-dir", str(tmp_path / "out"))
    try:
        processes = descendants(proc.pid)
        assert len(processes) >= 4  # API emulator, Prometheus, kubelet, operator
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 1
        assert not any(alive(p) for p in processes)
        assert "interrupted" in (tmp_path / "out.log").read_text()
        assert not (tmp_path / "state" / "state.json").exists()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
