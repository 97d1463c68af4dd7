"""`mlrollouts local up --detach`, `status` and `down` as a user runs them."""

from __future__ import annotations

import subprocess
import sys

import pytest

from support import require_binary

pytestmark = pytest.mark.integration


def cli(*args: str, timeout: float = 150) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mlrollouts.cli.main", "local", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_up_detached_status_and_down(tmp_path):
    require_binary("prometheus")
    state = str(tmp_path / "state")
    assert cli("status", "--state-dir", state).returncode == 1
    up = cli("up", "--detach", "--state-dir", state)
    try:
        assert up.returncode == 0, up.stderr
        assert "kubeconfig:" in up.stdout and "Prometheus:" in up.stdout
        status = cli("status", "--state-dir", state, timeout=60)
        assert status.returncode == 0, status.stderr
        assert "API server:" in status.stdout
        again = cli("up", "--detach", "--state-dir", state, timeout=60)
        assert "already running" in again.stdout
    finally:
        down = cli("down", "--state-dir", state, timeout=90)
    assert down.returncode == 0 and "playground stopped" in down.stdout, down.stderr
    assert cli("status", "--state-dir", state).returncode == 1
