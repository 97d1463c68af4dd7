"""Running the built container images with podman for the smoke tests in this folder.

The images run under podman the way a restricted Kubernetes pod runs them: as the non-root user
65532, with a read-only root filesystem and only /tmp writable (an emptyDir in a pod). Engine
settings come from hack/containers.conf through CONTAINERS_CONF, so /etc stays untouched.
Outside CI the tests skip with an install hint when podman is absent or an image is not built;
under CI=true both are failures.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from mlrollouts.local import containers
from mlrollouts.local.containers import INSTALL_HINT
from support import IN_CI

REPO = Path(__file__).resolve().parents[2]
NONROOT_UID = 65532
# What a restricted pod gets: a numeric non-root user, nothing writable but the /tmp emptyDir.
RESTRICTED = (
    "--read-only",
    "--read-only-tmpfs=false",
    "--tmpfs=/tmp:rw,mode=1777",
    f"--user={NONROOT_UID}:{NONROOT_UID}",
)


def unavailable(reason: str) -> None:
    if IN_CI:
        pytest.fail(f"{reason} (required in CI); {INSTALL_HINT}")
    pytest.skip(f"{reason}; {INSTALL_HINT}")


def image_name(kind: str) -> str:
    """The name hack/images.sh gives an image (same IMAGE_TAG and REGISTRY variables)."""
    version = re.search(r'^version = "(.+)"$', (REPO / "pyproject.toml").read_text(), re.MULTILINE)
    tag = os.environ.get("IMAGE_TAG") or (version.group(1) if version else "latest")
    registry = os.environ.get("REGISTRY", "").rstrip("/")
    return f"{registry + '/' if registry else ''}mlrollouts/{kind}:{tag}"


@dataclass(frozen=True)
class Podman(containers.Podman):
    """The playground's podman runner (engine settings from hack/containers.conf), plus restricted runs."""

    def run_restricted(self, image: str, args: Sequence[str], *options: str, timeout: float = 120) -> str:
        """Run a container to completion as a restricted pod would; returns its standard output."""
        return self("run", "--rm", *RESTRICTED, *options, image, *args, timeout=timeout).stdout
