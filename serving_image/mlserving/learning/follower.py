"""Follow the learner's snapshots in a serving replica: find a new one, verify it, open it.

    follower = SnapshotFollower(storage_uri, key, storage_options=options)
    snapshot = follower.poll(pinned=None)        # in a worker thread, e.g. every second
    if snapshot is not None:
        runtime = open_snapshot_model(snapshot)  # loaded and ready; swap it in atomically
        follower.serving(snapshot.version)       # once it is served

``poll`` reads the ``serving`` pointer (``latest`` in a store without one), so a pin set through the
learner is obeyed without a restart; ``pinned`` (a replica's own ``--pinned-snapshot``) wins over
both. A follower of the ``candidate`` pointer (the candidate-snapshot Deployment of a snapshot
canary) reads ``candidate``, and ``serving`` while no canary is in flight. A snapshot is fetched only when it differs from the one served. A snapshot whose signature or checksums fail raises SnapshotError
once and is then skipped, so a replica keeps serving what it has.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mlserving.learning.location import StorageLocation
from mlserving.learning.manifest import SnapshotError, SnapshotMissing, check_key
from mlserving.learning.snapshots import LoadedSnapshot, SnapshotStore

SERVING_POINTER = "serving"
CANDIDATE_POINTER = "candidate"
POINTERS = (SERVING_POINTER, CANDIDATE_POINTER)


class SnapshotFollower:
    def __init__(
        self,
        storage_uri: str,
        key: bytes,
        *,
        storage_options: Mapping[str, str] | None = None,
        download_dir: str | Path | None = None,
        pointer: str = SERVING_POINTER,
    ) -> None:
        check_key(key)
        if pointer not in POINTERS:
            raise ValueError(f"snapshot pointer {pointer!r}: expected one of {', '.join(POINTERS)}")
        self.pointer = pointer
        self.store = SnapshotStore(StorageLocation(storage_uri, storage_options or {}))
        self.key = key
        self.download_dir = (
            Path(download_dir) if download_dir else Path(tempfile.mkdtemp(prefix="mlserving-snapshots-"))
        )
        self.current: int | None = None
        self.refused: dict[int, str] = {}

    def poll(self, pinned: int | None = None) -> LoadedSnapshot | None:
        """The snapshot to serve next, verified and fetched; None when the served one is still right."""
        target = pinned if pinned is not None else self.target()
        if target is None or target == self.current or target in self.refused:
            return None
        destination = self.download_dir / str(target)
        try:
            return self.store.load(target, self.key, dest_dir=destination)
        except SnapshotMissing:
            shutil.rmtree(destination, ignore_errors=True)
            raise
        except SnapshotError as exc:
            # Refused for good: the same bytes would fail the same way on every poll.
            self.refused[target] = str(exc)
            shutil.rmtree(destination, ignore_errors=True)
            raise

    def target(self) -> int | None:
        """The snapshot the followed pointer names."""
        if self.pointer == CANDIDATE_POINTER:
            candidate = self.store.candidate()
            if candidate is not None:
                return candidate
        return self.store.serving()

    def serving(self, version: int) -> None:
        """Record that ``version`` is now served; the files of older snapshots are removed."""
        self.current = version
        for path in self.download_dir.iterdir():
            if path.name.isdigit() and int(path.name) != version:
                shutil.rmtree(path, ignore_errors=True)


def open_snapshot_model(
    snapshot: LoadedSnapshot, *, intra_op_threads: int = 1, inter_op_threads: int = 1
) -> Any:
    """A loaded ModelRuntime for the snapshot's serving model, with the outputs of the initial model.

    The ONNX file was converted from a scikit-learn estimator, so it is served as the server serves
    compiled scikit-learn models (output ``label``/``probabilities``, or ``value`` for a regressor).
    """
    from mlserving.runtimes.onnx import OnnxRuntime
    from mlserving.runtimes.sklearn import SklearnRuntime

    serving = snapshot.manifest["serving"]
    properties = {"snapshot": str(snapshot.version), "estimator": str(snapshot.manifest.get("estimator", ""))}
    if snapshot.serving_format == "onnx":
        runtime: Any = OnnxRuntime(
            snapshot.serving_path.read_bytes(),
            intra_op_threads=intra_op_threads,
            inter_op_threads=inter_op_threads,
            task="classification" if serving.get("task") == "classification" else "regression",
            rename={"variable": "value"},
            squeeze=("value",),
            platform="sklearn_onnx",
            properties=properties,
        )
    elif snapshot.serving_format == "skops":
        import skops.io as sio

        data = snapshot.serving_path.read_bytes()
        # The signature proves the learner wrote this file, so its types are trusted.
        estimator = sio.loads(data, trusted=sio.get_untrusted_types(data=data))
        runtime = SklearnRuntime(estimator, fallback_reason=str(serving.get("reason", "")))
    else:
        raise SnapshotError(
            f"snapshot {snapshot.version}: unknown serving format {snapshot.serving_format!r}"
        )
    runtime.load()
    return runtime
