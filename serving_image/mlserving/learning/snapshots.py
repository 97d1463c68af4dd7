"""Numbered, signed snapshots under ``<storage>/snapshots/<n>/``.

A snapshot holds the model for serving (``model.onnx`` when the estimator converts with skl2onnx
and the converted model agrees with it, else ``model.skops``), the learner state to resume from
(``learner.skops``) and ``manifest.json``: version, parent, created, samples, prequential
metrics, the data version (Delta table version) and seq range it learned from, the sha256 of each
file, and an HMAC-SHA256 signature.

Publishing writes the files, then the manifest, then the ``latest`` pointer; each write is atomic
(a rename on local disks, a single PUT on S3), so a reader that finds a manifest finds every file
it lists, and a snapshot without a manifest is incomplete and ignored. Snapshots are never
overwritten.

Serving replicas follow the ``serving`` pointer: it moves with ``latest`` unless a pin holds it on
one snapshot (``pinned``, written by :meth:`SnapshotStore.pin`, which the operator asks for through
the learner). A store that holds serving (``promotion: Canary``) never moves ``serving`` to a new
snapshot by itself: only a pin does, once the snapshot passed its canary. The candidate-snapshot
replicas of a canary follow the ``candidate`` pointer (:meth:`SnapshotStore.set_candidate`), or
``serving`` while no candidate is set. The learner is the only writer of these pointers; a pin is persisted in the storage,
so a restarted learner or replica keeps it. Loading verifies the signature first, then every file's checksum, and copies the
verified bytes to a local directory, so what is served is exactly what was checked.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlserving.learning.location import SNAPSHOTS_DIR, StorageLocation
from mlserving.learning.manifest import MANIFEST_FORMAT, SnapshotError, SnapshotMissing, sign, verify

MANIFEST_FILE = "manifest.json"
LATEST_FILE = "latest"
SERVING_FILE = "serving"
PINNED_FILE = "pinned"
CANDIDATE_FILE = "candidate"
STATE_FILE = "learner.skops"
_FILE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


@dataclass(frozen=True)
class LoadedSnapshot:
    """A verified snapshot, copied to ``directory``."""

    version: int
    manifest: dict[str, Any]
    directory: Path

    @property
    def serving_path(self) -> Path:
        return self.directory / str(self.manifest["serving"]["file"])

    @property
    def serving_format(self) -> str:
        return str(self.manifest["serving"]["format"])

    @property
    def state_path(self) -> Path:
        return self.directory / STATE_FILE


class SnapshotStore:
    def __init__(self, location: StorageLocation, *, hold_serving: bool = False) -> None:
        self.location = location
        self.hold_serving = hold_serving
        """Serving moves only with a pin, never to a newly published snapshot by itself."""
        # ``serving`` is read, then written, from publisher and pin threads: one at a time.
        self._pointers = threading.Lock()

    @property
    def fs(self) -> Any:
        return self.location.filesystem

    def _path(self, *parts: str) -> str:
        return self.location.path(SNAPSHOTS_DIR, *parts)

    # ---------------------------------------------------------------- reading

    def versions(self) -> list[int]:
        """Numbers of the published snapshots (those with a manifest), ascending."""
        self.fs.invalidate_cache()
        found = []
        for path in self.fs.glob(self._path("*", MANIFEST_FILE)):
            name = path.rstrip("/").split("/")[-2]
            if name.isdigit():
                found.append(int(name))
        return sorted(found)

    def exists(self, version: int) -> bool:
        """True once snapshot ``version`` is published (its manifest is written)."""
        return bool(self.fs.exists(self._path(str(version), MANIFEST_FILE)))

    def point_latest(self, version: int) -> None:
        """Move ``latest`` to ``version`` unless it already points at a newer snapshot."""
        current = self.latest()
        if current is None or current < version:
            self._write(self._path(LATEST_FILE), f"{version}\n".encode())

    def latest(self) -> int | None:
        """The ``latest`` pointer (None when nothing was published)."""
        return self._read_pointer(LATEST_FILE)

    def pinned(self) -> int | None:
        """The snapshot serving is pinned to (None: serving follows ``latest``)."""
        return self._read_pointer(PINNED_FILE)

    def serving(self) -> int | None:
        """The snapshot replicas serve: the ``serving`` pointer, or ``latest`` in a store written
        before that pointer existed."""
        found = self._read_pointer(SERVING_FILE)
        return found if found is not None else self.latest()

    def candidate(self) -> int | None:
        """The snapshot a canary serves to its share of traffic (None: no canary in flight)."""
        return self._read_pointer(CANDIDATE_FILE)

    def set_candidate(self, version: int | None) -> None:
        """Point the candidate-snapshot replicas at the published snapshot ``version`` (None: at
        ``serving``). SnapshotMissing for a snapshot that is not published."""
        with self._pointers:
            if version is None:
                if self.candidate() is not None:
                    self.fs.rm_file(self._path(CANDIDATE_FILE))
                return
            if not self.exists(version):
                raise SnapshotMissing(f"snapshot {version} is not published")
            self._write(self._path(CANDIDATE_FILE), f"{version}\n".encode())

    def pin(self, version: int | None) -> int | None:
        """Pin serving to the published snapshot ``version``, or follow ``latest`` again with None;
        returns the snapshot now served. SnapshotMissing for a snapshot that is not published."""
        with self._pointers:
            if version is None:
                if self.pinned() is not None:
                    self.fs.rm_file(self._path(PINNED_FILE))
            else:
                if not self.exists(version):
                    raise SnapshotMissing(f"snapshot {version} is not published")
                self._write(self._path(PINNED_FILE), f"{version}\n".encode())
            return self._sync_serving()

    def sync_serving(self) -> int | None:
        """Point ``serving`` at the pin or at ``latest`` (after a crash between two pointer writes)."""
        with self._pointers:
            return self._sync_serving()

    def _sync_serving(self) -> int | None:
        pinned = self.pinned()
        target = pinned if pinned is not None else self.latest()
        if pinned is None and self.hold_serving:
            held = self._read_pointer(SERVING_FILE)
            target = held if held is not None else target
        if target is not None and self._read_pointer(SERVING_FILE) != target:
            self._write(self._path(SERVING_FILE), f"{target}\n".encode())
        return target

    def _read_pointer(self, name: str) -> int | None:
        try:
            text = self.fs.cat_file(self._path(name)).decode().strip()
        except FileNotFoundError:
            return None
        return int(text) if text.isdigit() else None

    def read_manifest(self, version: int, key: bytes) -> dict[str, Any]:
        """The verified manifest of snapshot ``version``."""
        what = f"snapshot {version}"
        try:
            raw = self.fs.cat_file(self._path(str(version), MANIFEST_FILE))
        except FileNotFoundError:
            raise SnapshotMissing(
                f"{what}: no manifest at {self.location.url(SNAPSHOTS_DIR, str(version))}"
            ) from None
        try:
            manifest = json.loads(raw)
        except ValueError as exc:
            raise SnapshotError(f"{what}: manifest.json is not JSON ({exc})") from None
        if not isinstance(manifest, dict):
            raise SnapshotError(f"{what}: manifest.json is not an object")
        verify(manifest, key, what=what)
        if manifest.get("version") != version:
            raise SnapshotError(f"{what}: the manifest says version {manifest.get('version')!r}")
        return manifest

    def load(
        self, version: int, key: bytes, dest_dir: str | os.PathLike[str] | None = None
    ) -> LoadedSnapshot:
        """Verify snapshot ``version`` and copy its files to ``dest_dir`` (default: a new temp dir)."""
        manifest = self.read_manifest(version, key)
        files = manifest.get("files")
        if not isinstance(files, dict) or not files:
            raise SnapshotError(f"snapshot {version}: the manifest lists no files")
        directory = (
            Path(dest_dir) if dest_dir else Path(tempfile.mkdtemp(prefix=f"mlserving-snapshot-{version}-"))
        )
        directory.mkdir(parents=True, exist_ok=True)
        for name, expected in files.items():
            if not _FILE_NAME.match(name):
                raise SnapshotError(f"snapshot {version}: file name {name!r} is not allowed")
            try:
                data = self.fs.cat_file(self._path(str(version), name))
            except FileNotFoundError:
                raise SnapshotError(f"snapshot {version}: {name} is missing") from None
            actual = hashlib.sha256(data).hexdigest()
            if not isinstance(expected, str) or actual != expected:
                raise SnapshotError(
                    f"snapshot {version}: {name} has sha256 {actual}, the manifest says {expected}; refusing it"
                )
            (directory / name).write_bytes(data)
        return LoadedSnapshot(version, manifest, directory)

    # ---------------------------------------------------------------- retention

    def prune(
        self, keep: int, protected: set[int], key: bytes, roots: Mapping[int, Any] | None = None
    ) -> list[int]:
        """Delete every snapshot but the newest ``keep``, those in ``protected`` (pinned, served,
        candidate), ``latest``, and the first snapshot of the lineage of each kept one (the initial
        model an export retrains from; ``roots`` gives it for the snapshots whose manifest the caller
        has read already); returns the deleted versions. The data log is never
        touched: its rows are never rewritten. The manifest goes first, so a snapshot is either
        listed and whole, or not listed."""
        if keep < 1:
            raise ValueError(f"keep: at least 1 snapshot is kept, got {keep}")
        versions = self.versions()
        kept = set(versions[-keep:]) | protected
        latest = self.latest()
        if latest is not None:
            kept.add(latest)
        known = roots or {}
        for version in sorted(kept & set(versions)):
            root = (
                known[version] if version in known else self.read_manifest(version, key).get("lineage_root")
            )
            if isinstance(root, int):
                kept.add(root)
        doomed = [v for v in versions if v not in kept]
        for version in doomed:
            self.fs.rm_file(self._path(str(version), MANIFEST_FILE))
            self.fs.rm(self._path(str(version)), recursive=True)
        return doomed

    # ---------------------------------------------------------------- publishing

    def publish(
        self, version: int, files: Mapping[str, bytes], fields: Mapping[str, Any], key: bytes
    ) -> dict[str, Any]:
        """Write ``files``, then the signed manifest, then move ``latest`` (and ``serving`` unless
        pinned); returns the manifest."""
        if version < 0:
            raise SnapshotError(f"snapshot version must be >= 0, got {version}")
        if self.exists(version):
            raise SnapshotError(f"snapshot {version} already exists; snapshots are never overwritten")
        for name in files:
            if not _FILE_NAME.match(name) or name == MANIFEST_FILE:
                raise SnapshotError(f"snapshot file name {name!r} is not allowed")
        for name, data in files.items():
            self._write(self._path(str(version), name), data)
        manifest = sign(
            {
                **fields,
                "format": MANIFEST_FORMAT,
                "version": version,
                "files": {name: hashlib.sha256(data).hexdigest() for name, data in files.items()},
            },
            key,
        )
        # Readable on disk; the signature covers the canonical form, recomputed by every reader.
        body = json.dumps(manifest, sort_keys=True, indent=2, ensure_ascii=False).encode() + b"\n"
        self._write(self._path(str(version), MANIFEST_FILE), body)
        self.point_latest(version)
        self.sync_serving()
        return manifest

    def _write(self, path: str, data: bytes) -> None:
        if self.location.is_local:
            tmp = f"{path}.tmp-{os.getpid()}"
            self.fs.pipe_file(tmp, data)
            os.replace(tmp, path)
        else:
            # One PUT: an object is either entirely there or not at all.
            self.fs.pipe_file(path, data)


def load_snapshot(
    uri: str,
    version: int,
    key: bytes,
    *,
    storage_options: Mapping[str, str] | None = None,
    dest_dir: str | os.PathLike[str] | None = None,
) -> LoadedSnapshot:
    """Verify and fetch snapshot ``version`` under the storage ``uri``; SnapshotError when refused."""
    return SnapshotStore(StorageLocation(uri, storage_options or {})).load(version, key, dest_dir)


def serving_model(estimator: Any, *, tolerance: float = 1e-4) -> tuple[str, bytes, dict[str, Any]]:
    """The serving file of ``estimator``: ONNX when it converts and agrees on a probe batch, else skops."""
    import skops.io as sio

    from mlserving.runtimes import LoadOptions, compile_estimator
    from mlserving.runtimes.sklearn import task_of

    outcome = compile_estimator(estimator, LoadOptions(compile_tolerance=tolerance))
    task = task_of(estimator)
    if outcome.onnx_bytes is not None:
        return "model.onnx", outcome.onnx_bytes, {"file": "model.onnx", "format": "onnx", "task": task}
    info = {"file": "model.skops", "format": "skops", "task": task, "reason": outcome.reason or ""}
    return "model.skops", sio.dumps(estimator), info


def read_learner_state(snapshot: LoadedSnapshot) -> Any:
    """The learner state of a verified snapshot.

    Its types are trusted because the signature proves the learner itself wrote the file.
    """
    import skops.io as sio

    data = snapshot.state_path.read_bytes()
    return sio.loads(data, trusted=sio.get_untrusted_types(data=data))
