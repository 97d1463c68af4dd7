"""The operator image writes the same CRDs as the repository holds (`mlrollouts crds --output-dir`)."""

from __future__ import annotations

from image_support import REPO


def test_operator_image_writes_the_repository_crds(podman, image, tmp_path):
    out = tmp_path / "crds"
    out.mkdir()
    out.chmod(0o777)  # written by the container's non-root user
    podman.run_restricted(
        image("operator"), ["crds", "--output-dir", "/out"], "--network=none", f"--volume={out}:/out:rw"
    )
    expected = {path.name: path.read_text() for path in sorted((REPO / "crds").glob("*.yaml"))}
    written = {path.name: path.read_text() for path in sorted(out.glob("*.yaml"))}
    assert expected, "the repository has no CRDs to compare with"
    assert sorted(written) == sorted(expected)
    for name, text in expected.items():
        assert written[name] == text, (
            f"{name} written by the image differs from crds/{name} (an image older than the API models? `make images`)"
        )


def test_operator_command_starts_in_the_image(podman, image):
    usage = podman.run_restricted(image("operator"), ["operator", "run", "--help"], "--network=none")
    assert "--liveness" in usage
