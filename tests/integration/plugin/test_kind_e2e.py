"""The kind end-to-end run (hack/kind-e2e.sh) as an opt-in test: it needs a Docker daemon and kind,
and is skipped where they are absent (also in CI, which has neither)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = [pytest.mark.kind, pytest.mark.slow]

REPO_ROOT = Path(__file__).resolve().parents[3]


def docker_and_kind() -> str | None:
    """Why the run cannot happen here, or None when it can."""
    if not shutil.which("docker"):
        return "docker not found"
    if subprocess.run(["docker", "info"], capture_output=True, timeout=30).returncode != 0:
        return "the Docker daemon is not reachable"
    if not shutil.which("kind"):
        return "kind not found (go install sigs.k8s.io/kind@latest)"
    if not shutil.which("kubectl"):
        return "kubectl not found"
    return None


def test_canary_promoted_and_rolled_back_on_kind() -> None:
    missing = docker_and_kind()
    if missing:
        pytest.skip(f"{missing}; the kind end-to-end run needs Docker and kind (make kind-e2e)")
    result = subprocess.run(
        ["bash", str(REPO_ROOT / "hack" / "kind-e2e.sh")],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=3600,
    )
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-3000:]
    assert "kind-e2e: PASSED" in result.stdout
