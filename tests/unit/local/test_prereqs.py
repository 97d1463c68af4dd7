"""hack/prereqs.sh: the system packages of `make demo` / `make test`, checked before anything slow.

Each test runs the script with a PATH of its own: fake ``id``, ``sudo`` and ``apt-get`` programs stand
for a non-root user, a sudo that asks for a password, and the Debian package manager.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[3]
SCRIPT = REPO_ROOT / "hack" / "prereqs.sh"
BASH = shutil.which("bash") or "/bin/bash"


def _program(path: Path, body: str) -> None:
    path.write_text(f"#!{BASH}\n{body}\n")
    path.chmod(0o755)


@pytest.fixture
def fake_bin(tmp_path: Path) -> Path:
    """A PATH holding only what the script may call besides the programs each test adds."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("env", "chmod"):
        (bin_dir / tool).symlink_to(shutil.which(tool) or f"/usr/bin/{tool}")
    return bin_dir


def _run(bin_dir: Path, target: str, cwd: Path = REPO_ROOT) -> tuple[subprocess.CompletedProcess[str], float]:
    started = time.monotonic()
    result = subprocess.run(
        [BASH, str(SCRIPT), target],
        env={"PATH": str(bin_dir), "PYTHON": str(bin_dir / "python3")},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=10,
    )
    return result, time.monotonic() - started


def test_missing_packages_without_root_or_sudo_stop_at_once_with_the_command(fake_bin: Path) -> None:
    _program(fake_bin / "id", "echo 1000")
    _program(fake_bin / "sudo", "exit 1")  # a password would be asked
    _program(fake_bin / "apt-get", "echo apt-get must not run >&2; exit 3")
    _program(fake_bin / "hey", "exit 0")

    result, elapsed = _run(fake_bin, "test")

    assert result.returncode == 1, result.stderr
    assert "sudo apt-get update && sudo apt-get install -y prometheus wrk" in result.stderr
    assert "apt-get must not run" not in result.stderr
    assert elapsed < 1.0


def test_root_installs_the_missing_packages_then_passes(fake_bin: Path, tmp_path: Path) -> None:
    calls = tmp_path / "apt-calls"
    _program(fake_bin / "id", "echo 0")
    _program(
        fake_bin / "apt-get",
        f'echo "$DEBIAN_FRONTEND $*" >> {calls}\n'
        'if [ "$1" = install ]; then for p in "$@"; do case "$p" in -*|install) ;; '
        f'*) echo "#!{BASH}" > {fake_bin}/"$p"; chmod +x {fake_bin}/"$p";; esac; done; fi',
    )

    result, _ = _run(fake_bin, "demo")

    assert result.returncode == 0, result.stderr
    lines = calls.read_text().splitlines()
    assert lines[0].endswith("update -qq")
    assert lines[1] == "noninteractive install -y -qq --no-install-recommends prometheus"
    assert (fake_bin / "prometheus").exists()


def test_a_python_without_venv_needs_python3_venv_before_the_venv_is_built(
    fake_bin: Path, tmp_path: Path
) -> None:
    _program(fake_bin / "id", "echo 1000")
    _program(fake_bin / "prometheus", "exit 0")
    _program(fake_bin / "python3", "exit 1")  # `import ensurepip` fails, as on a fresh Debian
    _program(fake_bin / "apt-get", "exit 3")

    result, _ = _run(fake_bin, "demo", cwd=tmp_path)

    assert result.returncode == 1
    assert "sudo apt-get install -y python3-venv" in result.stderr


def test_present_packages_pass_quickly(fake_bin: Path) -> None:
    for binary in ("prometheus", "wrk", "hey", "kubectl"):
        _program(fake_bin / binary, "exit 0")

    result, elapsed = _run(fake_bin, "test")

    assert (result.returncode, result.stderr) == (0, "")
    assert elapsed < 1.0


def test_make_demo_and_make_test_check_prerequisites_before_building_the_venv(tmp_path: Path) -> None:
    make = shutil.which("make")
    if make is None:
        pytest.skip("make not on PATH")
    for target in ("demo", "test"):
        # -B: plan every step, as on a fresh clone without a venv
        plan = subprocess.run(
            [make, "--no-print-directory", "-n", "-B", target],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=30,
            env=os.environ,
        ).stdout.splitlines()
        first = plan[0]
        assert f"hack/prereqs.sh {target}" in first, plan[:3]
        assert any("-m venv" in line for line in plan[1:]), plan
