"""Pod volumes of the process kubelet: which types it provides, how mount paths are rewritten, and
the files a Secret or ConfigMap volume holds."""

from __future__ import annotations

import base64
import stat
from pathlib import Path

import pytest

from mlrollouts.local.volumes import (
    MissingReference,
    container_mounts,
    materialize,
    pod_volumes,
    rewrite_path,
)


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def objects(**found):
    """A reader over ``{"Secret/name": obj, "ConfigMap/name": obj}``."""
    return lambda kind, name: found.get(f"{kind}/{name}")


def test_mount_paths_are_rewritten_alone_below_and_after_a_flag(tmp_path):
    mounts = {"/var/run/key": tmp_path / "key", "/var/run": tmp_path / "run", "/tmp": tmp_path / "tmp"}
    assert rewrite_path("/var/run/key/signing-key", mounts) == str(tmp_path / "key" / "signing-key")
    assert rewrite_path("/var/run/other", mounts) == str(tmp_path / "run" / "other")  # longest mount wins
    assert rewrite_path("/tmp", mounts) == str(tmp_path / "tmp")
    assert (
        rewrite_path("--download-dir=/tmp/models", mounts) == f"--download-dir={tmp_path / 'tmp' / 'models'}"
    )
    # not under a mount: a sibling with the same prefix, a URI, a relative path
    for unchanged in ("/tmpfiles/x", "file:///tmp/store", "tmp/x", "--port=8080", "/var/runtime"):
        assert rewrite_path(unchanged, mounts) == unchanged


def test_pod_volumes_accept_the_provided_types_and_name_the_others(tmp_path):
    volumes = pod_volumes(
        {
            "volumes": [
                {"name": "key", "secret": {"secretName": "k"}},
                {"name": "tmp", "emptyDir": {}},
                {"name": "host", "hostPath": {"path": "/data/models"}},
            ]
        },
        tmp_path,
    )
    assert volumes.path_of("key") == tmp_path / "key"
    assert volumes.path_of("host") == Path("/data/models")
    with pytest.raises(ValueError, match=r"spec.volumes\[0\] \(share\).*nfs"):
        pod_volumes({"volumes": [{"name": "share", "nfs": {"server": "nfs", "path": "/"}}]}, tmp_path)
    with pytest.raises(ValueError, match="used twice"):
        pod_volumes({"volumes": [{"name": "a", "emptyDir": {}}, {"name": "a", "emptyDir": {}}]}, tmp_path)


def test_container_mounts_need_a_declared_volume_and_an_absolute_path(tmp_path):
    volumes = pod_volumes({"volumes": [{"name": "cfg", "configMap": {"name": "c"}}]}, tmp_path)
    mounts = container_mounts(
        volumes,
        {"name": "app", "volumeMounts": [{"name": "cfg", "mountPath": "/etc/app/", "subPath": "one"}]},
    )
    assert mounts == {"/etc/app": tmp_path / "cfg" / "one"}
    with pytest.raises(ValueError, match=r"volumeMounts\[0\]: volume 'nope' is not in spec.volumes"):
        container_mounts(volumes, {"name": "app", "volumeMounts": [{"name": "nope", "mountPath": "/x"}]})
    with pytest.raises(ValueError, match=r"volumeMounts\[0\].mountPath"):
        container_mounts(volumes, {"name": "app", "volumeMounts": [{"name": "cfg", "mountPath": "etc"}]})


def test_secret_items_are_written_decoded_with_their_modes(tmp_path):
    spec = {
        "volumes": [
            {
                "name": "key",
                "secret": {
                    "secretName": "k",
                    "defaultMode": 0o440,
                    "items": [
                        {"key": "signing-key", "path": "dir/key"},
                        {"key": "other", "path": "o", "mode": 0o400},
                    ],
                },
            }
        ]
    }
    secret = {"data": {"signing-key": b64("s3cret"), "other": b64("x"), "unlisted": b64("y")}}
    materialize(pod_volumes(spec, tmp_path), objects(**{"Secret/k": secret}))
    written = tmp_path / "key" / "dir" / "key"
    assert written.read_text() == "s3cret" and stat.S_IMODE(written.stat().st_mode) == 0o440
    assert stat.S_IMODE((tmp_path / "key" / "o").stat().st_mode) == 0o400
    assert not (tmp_path / "key" / "unlisted").exists()
    materialize(
        pod_volumes(spec, tmp_path), objects(**{"Secret/k": secret})
    )  # again: read-only files replaced


def test_config_maps_write_every_key_and_empty_dirs_are_created(tmp_path):
    spec = {"volumes": [{"name": "cfg", "configMap": {"name": "c"}}, {"name": "scratch", "emptyDir": {}}]}
    config_map = {"data": {"a.json": "{}"}, "binaryData": {"b.bin": b64("\x00\x01")}}
    materialize(pod_volumes(spec, tmp_path), objects(**{"ConfigMap/c": config_map}))
    assert (tmp_path / "cfg" / "a.json").read_text() == "{}"
    assert (tmp_path / "cfg" / "b.bin").read_bytes() == b"\x00\x01"
    assert (tmp_path / "scratch").is_dir()


def test_a_missing_secret_or_key_makes_the_pod_wait_unless_optional(tmp_path):
    spec = {"volumes": [{"name": "key", "secret": {"secretName": "k"}}]}
    with pytest.raises(MissingReference, match='secret "k" not found'):
        materialize(pod_volumes(spec, tmp_path), objects())
    optional = {"volumes": [{"name": "key", "secret": {"secretName": "k", "optional": True}}]}
    materialize(pod_volumes(optional, tmp_path / "o"), objects())
    assert (tmp_path / "o" / "key").is_dir()
    items = {
        "volumes": [{"name": "key", "secret": {"secretName": "k", "items": [{"key": "absent", "path": "a"}]}}]
    }
    with pytest.raises(MissingReference, match="key 'absent' not found"):
        materialize(pod_volumes(items, tmp_path / "i"), objects(**{"Secret/k": {"data": {}}}))


def test_an_item_path_cannot_leave_its_volume(tmp_path):
    spec = {
        "volumes": [
            {"name": "key", "secret": {"secretName": "k", "items": [{"key": "a", "path": "../escape"}]}}
        ]
    }
    with pytest.raises(ValueError, match="leaves the volume"):
        materialize(pod_volumes(spec, tmp_path / "v"), objects(**{"Secret/k": {"data": {"a": b64("x")}}}))
    assert not (tmp_path / "v" / "escape").exists()


def test_a_path_of_this_machine_under_a_mount_path_is_left_alone(tmp_path):
    host_file = tmp_path / "python"
    host_file.write_text("")
    mounts = {str(tmp_path): tmp_path / "volume"}
    assert rewrite_path(str(host_file), mounts) == str(host_file)
    assert rewrite_path(str(tmp_path / "settings.json"), mounts) == str(tmp_path / "volume" / "settings.json")
