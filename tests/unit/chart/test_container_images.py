"""Container images: the Dockerfiles follow the house rules, the operator image holds every module
the operator imports, and the build and kind scripts step aside cleanly where Docker is missing."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO_ROOT = Path(__file__).resolve().parents[3]
OPERATOR_DOCKERFILE = REPO_ROOT / "operator" / "Dockerfile"
DOCKERFILES = [p for p in (OPERATOR_DOCKERFILE, REPO_ROOT / "serving_image" / "Dockerfile") if p.exists()]
COMPILERS = ("gcc", "g++", "clang", "build-essential", "make", "cc ", "rustc", "cargo")


@dataclass
class Stage:
    name: str
    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)


def parse_dockerfile(path: Path) -> list[Stage]:
    """Stages with their instructions (continuation lines joined, comments dropped)."""
    logical: list[str] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical:
        keyword, _, rest = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "ARG" and not stages and "=" in rest:
            key, value = rest.split("=", 1)
            args[key.strip()] = value.strip()
        elif keyword == "FROM":
            parts = rest.split()
            base = re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), m.group(0)), parts[0])
            name = parts[2] if len(parts) >= 3 and parts[1].upper() == "AS" else str(len(stages))
            stages.append(Stage(name, base))
        elif stages:
            stages[-1].instructions.append((keyword, rest))
    return stages


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_dockerfile_runs_as_numeric_non_root_without_compilers(dockerfile: Path) -> None:
    stages = parse_dockerfile(dockerfile)
    assert len(stages) >= 2, "multi-stage: build dependencies stay out of the runtime image"
    final = stages[-1]
    users = [rest for keyword, rest in final.instructions if keyword == "USER"]
    assert users, "the final stage sets USER"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0, f"USER {users[-1]}: numeric and not root (runAsNonRoot checks it)"
    runs = " ".join(rest for keyword, rest in final.instructions if keyword == "RUN")
    for compiler in COMPILERS:
        assert compiler not in runs, f"{compiler} installed in the final stage"
    assert not any(keyword == "ADD" and "://" in rest for keyword, rest in final.instructions)
    copies = [rest for keyword, rest in final.instructions if keyword == "COPY"]
    assert any("--from=" in c for c in copies), "the final stage copies the build stage's result"
    assert ":latest" not in final.base and ":" in final.base, f"pinned base image, got {final.base}"
    assert any(keyword == "ENTRYPOINT" for keyword, _ in final.instructions)


def test_parser_sees_a_root_user() -> None:
    """The lint above can fail: a Dockerfile running as root is told apart."""
    stages = parse_dockerfile(OPERATOR_DOCKERFILE)
    assert [r for k, r in stages[-1].instructions if k == "USER"] == ["65532:65532"]
    assert stages[0].base == "python:3.11-slim-bookworm"


# --- the operator image's Python environment ------------------------------------------------------


def _pip_install_args() -> list[str]:
    """What the operator Dockerfile installs: the project with its extras plus extra requirements."""
    for stage in parse_dockerfile(OPERATOR_DOCKERFILE):
        for keyword, rest in stage.instructions:
            if keyword == "RUN" and "pip install" in rest:
                command = rest.split("&&")[0]
                words = shlex.split(command)
                words = words[words.index("install") + 1 :]
                return [w for i, w in enumerate(words) if not w.startswith("-") and words[i - 1] != "-c"]
    raise AssertionError("no pip install in operator/Dockerfile")


def _closure(requirements: list[Requirement]) -> set[str]:
    """Every distribution these requirements pull in, as installed here (markers evaluated)."""
    seen: set[str] = set()
    todo = [(r, frozenset(r.extras)) for r in requirements]
    while todo:
        req, extras = todo.pop()
        name = canonicalize_name(req.name)
        key = f"{name}[{','.join(sorted(extras))}]"
        if key in seen:
            continue
        seen.add(key)
        seen.add(name)
        for text in metadata.requires(req.name) or []:
            sub = Requirement(text)
            if sub.marker is None:
                todo.append((sub, frozenset(sub.extras)))
                continue
            for extra in ["", *extras]:
                if sub.marker.evaluate({"extra": extra}):
                    todo.append((sub, frozenset(sub.extras)))
                    break
    return {s for s in seen if "[" not in s}


def image_distributions() -> set[str]:
    requirements = []
    for arg in _pip_install_args():
        if arg.startswith("."):
            extras = re.search(r"\[([^\]]*)\]", arg)
            requirements.append(Requirement(f"mlrollouts[{extras.group(1)}]" if extras else "mlrollouts"))
        else:
            requirements.append(Requirement(arg))
    return _closure(requirements)


ENTRY_POINTS = "import mlrollouts.cli.main, mlrollouts.cli.operator, mlrollouts.cli.plugin, mlrollouts.controller.operator"


def image_site_packages(dists: set[str], target: Path) -> Path:
    """A site-packages holding only ``dists``: links to what they installed here, metadata included."""
    target.mkdir()
    for dist in metadata.distributions():
        name = canonicalize_name(dist.metadata["Name"])
        if name not in dists or name == "mlrollouts":  # the project is an editable install: added as source
            continue
        for file in dist.files or []:
            top = file.parts[0]
            if top in ("..", "__pycache__") or top.endswith(".pth"):
                continue
            link, source = target / top, Path(str(dist.locate_file(top)))
            if not link.exists() and source.exists():
                link.symlink_to(source)
    return target


def import_with_only(dists: set[str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """Import the operator's entry points in an interpreter that sees only ``dists`` (and the stdlib)."""
    site = image_site_packages(dists, tmp_path / "site-packages")
    env = {
        "PATH": os.environ.get("PATH", ""),
        "PYTHONPATH": os.pathsep.join(
            [str(site), str(REPO_ROOT / "operator"), str(REPO_ROOT / "serving_image")]
        ),
        "PYTHONNOUSERSITE": "1",
    }
    # -S: no site-packages of this environment, only PYTHONPATH and the standard library
    return subprocess.run(
        [sys.executable, "-S", "-c", ENTRY_POINTS],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=tmp_path,
    )


def test_operator_image_installs_everything_the_operator_imports(tmp_path: Path) -> None:
    """Import the operator's entry points with only the distributions the image installs.

    Optional imports (guarded by ``except ImportError``) simply find nothing; a hard dependency the
    image would lack makes the import fail here as it would in the container.
    """
    dists = image_distributions()
    assert {"kopf", "kubernetes", "mlrollouts"} <= dists
    result = import_with_only(dists, tmp_path)
    assert result.returncode == 0, f"the operator image would miss a module:\n{result.stderr[-3000:]}"


def test_the_import_check_notices_a_missing_distribution(tmp_path: Path) -> None:
    result = import_with_only(image_distributions() - {"kopf"}, tmp_path)
    assert result.returncode != 0
    assert "No module named 'kopf'" in result.stderr


# --- scripts without Docker -----------------------------------------------------------------------


def _path_without(*names: str, tmp_path: Path) -> str:
    """A PATH holding bash and the basics, but none of ``names``."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for tool in (
        "bash",
        "env",
        "dirname",
        "cat",
        "mktemp",
        "rm",
        "tar",
        "python3",
        "uname",
        "sed",
        "grep",
        "head",
    ):
        found = shutil.which(tool)
        if found and tool not in names:
            (bindir / tool).symlink_to(found)
    return str(bindir)


@pytest.mark.parametrize("script", ["hack/images.sh", "hack/kind-e2e.sh"])
def test_scripts_are_valid_bash(script: str) -> None:
    result = subprocess.run(["bash", "-n", str(REPO_ROOT / script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("script", ["hack/images.sh", "hack/kind-e2e.sh"])
def test_scripts_skip_cleanly_without_docker(script: str, tmp_path: Path) -> None:
    env = {"PATH": _path_without("docker", "kind", tmp_path=tmp_path), "HOME": str(tmp_path)}
    result = subprocess.run(
        ["bash", str(REPO_ROOT / script)], capture_output=True, text=True, env=env, timeout=60, cwd=tmp_path
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "skipping" in result.stdout.lower() and "docker" in result.stdout.lower()


def test_scripts_skip_when_the_docker_daemon_is_down(tmp_path: Path) -> None:
    """A docker CLI without a daemon (as on this machine) is no Docker either."""
    bindir = Path(_path_without("docker", "kind", tmp_path=tmp_path))
    fake = bindir / "docker"
    fake.write_text("#!/usr/bin/env bash\necho 'Cannot connect to the Docker daemon' >&2\nexit 1\n")
    fake.chmod(0o755)
    env = {"PATH": str(bindir), "HOME": str(tmp_path)}
    for script in ("hack/images.sh", "hack/kind-e2e.sh"):
        result = subprocess.run(
            ["bash", str(REPO_ROOT / script)],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
            cwd=tmp_path,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert "daemon" in result.stdout.lower() and "skipping" in result.stdout.lower()


def test_kind_config_is_a_kind_cluster() -> None:
    import yaml

    config = yaml.safe_load((REPO_ROOT / "kind-config.yaml").read_text())
    assert config["kind"] == "Cluster" and config["apiVersion"] == "kind.x-k8s.io/v1alpha4"
    assert [n["role"] for n in config["nodes"]].count("control-plane") == 1
    assert os.access(REPO_ROOT / "hack" / "kind-e2e.sh", os.R_OK)
