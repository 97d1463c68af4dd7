"""Both images: non-root by default, runnable on a read-only root filesystem, within their size budget."""

from __future__ import annotations

import json

import pytest
from image_support import NONROOT_UID

# Uncompressed bytes, as `podman image inspect` and `docker image inspect` report them.
SIZE_BUDGETS = {"operator": 400_000_000, "serving": 600_000_000}

# Runs inside the container: who am I, and where can I write?
PROBE = """
import json, os, tempfile
def writable(directory):
    try:
        with tempfile.NamedTemporaryFile(dir=directory):
            return True
    except OSError:
        return False
print(json.dumps({"uid": os.getuid(), "gid": os.getgid(), "home": os.environ.get("HOME"),
                  "writable": {d: writable(d) for d in ("/", "/opt", "/etc", "/tmp", os.getcwd())}}))
"""


@pytest.mark.parametrize("kind", ["operator", "serving"])
def test_image_defaults_to_a_numeric_non_root_user(podman, image, kind):
    config = podman.inspect_image(image(kind))["Config"]
    # Numeric, so that runAsNonRoot can verify it without a passwd entry.
    assert config["User"] == f"{NONROOT_UID}:{NONROOT_UID}"


@pytest.mark.parametrize("kind", ["operator", "serving"])
def test_image_fits_its_size_budget(podman, image, kind):
    size = podman.inspect_image(image(kind))["Size"]
    assert size < SIZE_BUDGETS[kind], (
        f"{kind} image is {size / 1e6:.0f} MB, budget {SIZE_BUDGETS[kind] / 1e6:.0f} MB"
    )


@pytest.mark.parametrize("kind", ["operator", "serving"])
def test_image_runs_as_non_root_with_only_tmp_writable(podman, image, kind):
    out = podman.run_restricted(image(kind), ["-c", PROBE], "--network=none", "--entrypoint=python")
    facts = json.loads(out)
    assert (facts["uid"], facts["gid"]) == (NONROOT_UID, NONROOT_UID)
    assert facts["home"] == "/tmp"
    assert facts["writable"] == {"/": False, "/opt": False, "/etc": False, "/tmp": True}
