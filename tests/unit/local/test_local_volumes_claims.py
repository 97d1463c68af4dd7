"""persistentVolumeClaim volumes of the process kubelet: one directory per claim and namespace,
shared by every pod naming the claim and kept when the pods go."""

from __future__ import annotations

import pytest

from mlrollouts.local.volumes import container_mounts, materialize, pod_volumes, rewrite_path


def _spec(claim: str) -> dict:
    return {
        "volumes": [{"name": "cache", "persistentVolumeClaim": {"claimName": claim}}],
        "containers": [{"name": "c", "volumeMounts": [{"name": "cache", "mountPath": "/var/cache/x"}]}],
    }


def no_objects(kind, name):
    return None


def test_pods_naming_a_claim_share_its_directory_and_keep_its_files(tmp_path):
    claims = tmp_path / "claims" / "ml"
    first = pod_volumes(_spec("model-cache"), tmp_path / "pods/ml/a/volumes", claims)
    materialize(first, no_objects)
    mounts = container_mounts(first, _spec("model-cache")["containers"][0])
    written = rewrite_path("/var/cache/x/entry.onnx", mounts)
    assert written == str(claims / "model-cache" / "entry.onnx")
    (claims / "model-cache" / "entry.onnx").write_bytes(b"compiled")

    second = pod_volumes(_spec("model-cache"), tmp_path / "pods/ml/b/volumes", claims)
    materialize(second, no_objects)
    assert second.path_of("cache") == claims / "model-cache"
    assert (second.path_of("cache") / "entry.onnx").read_bytes() == b"compiled"

    other_namespace = pod_volumes(_spec("model-cache"), tmp_path / "pods/x/c/volumes", tmp_path / "claims/x")
    assert other_namespace.path_of("cache") != second.path_of("cache")


@pytest.mark.parametrize("claim", ["../escape", "Upper", "", "a/b", None])
def test_a_claim_name_that_is_not_an_object_name_is_refused_naming_the_field(tmp_path, claim):
    with pytest.raises(ValueError, match=r"spec.volumes\[0\].persistentVolumeClaim.claimName \(cache\)"):
        pod_volumes(_spec(claim), tmp_path / "volumes", tmp_path / "claims")


def test_a_kubelet_without_a_claims_directory_refuses_the_volume(tmp_path):
    with pytest.raises(ValueError, match=r"spec.volumes\[0\] \(cache\).*no directory for claims"):
        pod_volumes(_spec("model-cache"), tmp_path / "volumes")
