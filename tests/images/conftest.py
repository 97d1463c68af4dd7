"""Fixtures of the image smoke tests (`make test-images`; not part of `make test`'s test paths)."""

from __future__ import annotations

import shutil

import pytest
from image_support import Podman, image_name, unavailable


@pytest.fixture(scope="session")
def podman() -> Podman:
    binary = shutil.which("podman")
    if binary is None:
        unavailable("podman not found on PATH")
    return Podman(binary)


@pytest.fixture(scope="session")
def image(podman: Podman):
    """Resolves an image kind (operator, serving) to a built image name, or skips / fails."""

    def resolve(kind: str) -> str:
        name = image_name(kind)
        if podman("image", "exists", name, check=False).returncode != 0:
            unavailable(f"image {name} is not built")
        return name

    return resolve
