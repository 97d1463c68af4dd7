"""Pod volumes for the process kubelet: each volume is a directory under the pod's work dir.

A container of the playground sees the host's file system, so a path it is given (an argument, an
environment value) that lies under one of its ``volumeMounts`` is rewritten to the volume's
directory: ``--key-file /var/run/keys/key`` becomes ``<pod dir>/volumes/keys/key``. What fills the
directory follows the volume's type, as on a kubelet:

- ``secret``: one file per key (or per ``items`` entry), the Secret's data decoded, with the
  volume's ``defaultMode`` (or the item's ``mode``);
- ``configMap``: the same from a ConfigMap's ``data`` and ``binaryData``;
- ``emptyDir``: an empty directory that lives as long as the pod;
- ``hostPath``: the host path itself;
- ``persistentVolumeClaim``: one directory per claim and namespace, ``claims/<namespace>/<claimName>``
  under the kubelet's work dir (``<state dir>/work`` in the playground), shared by every pod that
  names the claim and kept across pod restarts and playground restarts, like a ReadWriteMany volume
  (no PersistentVolumeClaim object is needed: any claim is bound on first use; ``rm -r`` the
  directory to empty it).

A Secret or ConfigMap that does not exist yet (and is not ``optional``) leaves the pod waiting, as a
kubelet does, until it appears. Contents are written when the pod's containers first start.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

Obj = dict[str, Any]
ObjectReader = Callable[[str, str], Obj | None]
"""``read(kind, name)``: a Secret or ConfigMap of the pod's namespace, or None when there is none."""

SUPPORTED_TYPES = ("secret", "configMap", "emptyDir", "hostPath", "persistentVolumeClaim")
CLAIM_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
DEFAULT_MODE = 0o644


class MissingReference(Exception):
    """A Secret or ConfigMap the pod refers to (or one of its keys) does not exist yet: the pod
    waits for it, as on a kubelet."""


@dataclass(frozen=True)
class PodVolumes:
    """The volumes of one pod and the directory each one is served from."""

    root: Path
    specs: dict[str, Obj]
    claims: Path | None = None  # the directory of this namespace's claims

    def path_of(self, name: str) -> Path:
        spec = self.specs[name]
        if "hostPath" in spec:
            return Path(spec["hostPath"]["path"])
        if "persistentVolumeClaim" in spec and self.claims is not None:
            return self.claims / spec["persistentVolumeClaim"]["claimName"]
        return self.root / name


def volume_type(spec: Obj) -> str | None:
    return next((kind for kind in SUPPORTED_TYPES if kind in spec), None)


def pod_volumes(pod_spec: Obj, root: Path, claims: Path | None = None) -> PodVolumes:
    """The pod's ``spec.volumes``; a type the playground cannot provide is a ValueError naming it.
    ``claims`` is the directory of the namespace's persistentVolumeClaim volumes."""
    specs: dict[str, Obj] = {}
    for index, spec in enumerate(pod_spec.get("volumes") or []):
        name = spec.get("name")
        if not name:
            raise ValueError(f"spec.volumes[{index}].name is required")
        if name in specs:
            raise ValueError(f"spec.volumes[{index}].name: {name!r} is used twice")
        if volume_type(spec) is None:
            others = sorted(k for k in spec if k != "name")
            raise ValueError(
                f"spec.volumes[{index}] ({name}): type {others} is not supported by the local kubelet "
                f"(supported: {', '.join(SUPPORTED_TYPES)})"
            )
        if "persistentVolumeClaim" in spec:
            claim = (spec["persistentVolumeClaim"] or {}).get("claimName")
            if not isinstance(claim, str) or not CLAIM_NAME.match(claim) or len(claim) > 253:
                raise ValueError(
                    f"spec.volumes[{index}].persistentVolumeClaim.claimName ({name}): must be a "
                    f"PersistentVolumeClaim name (a DNS-1123 subdomain), got {claim!r}"
                )
            if claims is None:
                raise ValueError(f"spec.volumes[{index}] ({name}): this kubelet has no directory for claims")
        specs[name] = spec
    return PodVolumes(root, specs, claims)


def container_mounts(volumes: PodVolumes, container: Obj) -> dict[str, Path]:
    """``mountPath`` -> local directory (or file, with ``subPath``) for one container."""
    mounts: dict[str, Path] = {}
    for index, mount in enumerate(container.get("volumeMounts") or []):
        name, mount_path = mount.get("name"), mount.get("mountPath")
        where = f"container {container.get('name')!r} volumeMounts[{index}]"
        if name not in volumes.specs:
            raise ValueError(f"{where}: volume {name!r} is not in spec.volumes")
        if not mount_path or not str(mount_path).startswith("/"):
            raise ValueError(f"{where}.mountPath: must be an absolute path, got {mount_path!r}")
        local = volumes.path_of(name)
        if mount.get("subPath"):
            local = local / str(mount["subPath"])
        mounts[str(mount_path).rstrip("/") or "/"] = local
    return mounts


def rewrite_path(value: str, mounts: dict[str, Path]) -> str:
    """``value`` with a leading mount path (alone, or after ``--flag=``) replaced by its directory."""
    if value.startswith("-") and "=" in value:
        flag, _, rest = value.partition("=")
        return f"{flag}={rewrite_path(rest, mounts)}"
    for mount_path in sorted(mounts, key=len, reverse=True):
        if value == mount_path:
            return str(mounts[mount_path])
        if value.startswith(mount_path + "/"):
            if Path(value).exists():
                # a file of this machine (the interpreter of a project checked out under /tmp, say),
                # not one the container expects inside its volume
                return value
            return str(mounts[mount_path]) + value[len(mount_path) :]
    return value


def materialize(volumes: PodVolumes, read: ObjectReader) -> None:
    """Create every volume's directory and write the files of Secrets and ConfigMaps."""
    for name, spec in volumes.specs.items():
        kind = volume_type(spec)
        if kind == "hostPath":
            continue
        directory = volumes.path_of(name)
        directory.mkdir(parents=True, exist_ok=True)
        if kind == "secret":
            _write_files(directory, name, spec["secret"], _secret_files(spec["secret"], read))
        elif kind == "configMap":
            _write_files(directory, name, spec["configMap"], _config_map_files(spec["configMap"], read))


def _secret_files(source: Obj, read: ObjectReader) -> dict[str, bytes] | None:
    secret_name = source.get("secretName", "")
    obj = read("Secret", secret_name)
    if obj is None:
        return _missing(source, f'secret "{secret_name}" not found')
    files: dict[str, bytes] = {}
    for key, value in (obj.get("data") or {}).items():
        try:
            files[key] = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError(f"secret {secret_name!r}: data.{key} is not base64") from None
    for key, value in (obj.get("stringData") or {}).items():
        files[key] = str(value).encode()
    return files


def _config_map_files(source: Obj, read: ObjectReader) -> dict[str, bytes] | None:
    map_name = source.get("name", "")
    obj = read("ConfigMap", map_name)
    if obj is None:
        return _missing(source, f'configmap "{map_name}" not found')
    files = {key: str(value).encode() for key, value in (obj.get("data") or {}).items()}
    for key, value in (obj.get("binaryData") or {}).items():
        files[key] = base64.b64decode(value)
    return files


def _missing(source: Obj, message: str) -> None:
    if source.get("optional"):
        return None
    raise MissingReference(message)


def _write_files(directory: Path, volume: str, source: Obj, files: dict[str, bytes] | None) -> None:
    if files is None:  # optional and absent: an empty directory
        return
    default_mode = int(source.get("defaultMode", DEFAULT_MODE))
    items = source.get("items")
    wanted = (
        [(item["key"], item.get("path", item["key"]), item.get("mode")) for item in items]
        if items
        else [(key, key, None) for key in files]
    )
    for key, relative, mode in wanted:
        if key not in files:
            if source.get("optional"):
                continue
            raise MissingReference(f"volume {volume!r}: key {key!r} not found")
        target = (directory / relative).resolve()
        if directory.resolve() not in target.parents:
            raise ValueError(f"volume {volume!r}: items path {relative!r} leaves the volume")
        target.parent.mkdir(parents=True, exist_ok=True)
        staged = target.with_name(f".{target.name}.tmp")
        # the mode applies before the file is visible: a key file is never readable by others
        descriptor = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(files[key])
        os.chmod(staged, int(mode) if mode is not None else default_mode)
        staged.replace(target)
