"""Reproduce a snapshot: export it with the exact production rows it learned from, and retrain.

``export_snapshot`` writes to a directory:

- the snapshot's verified files and ``manifest.json``;
- ``initial/``: the first snapshot of its lineage, holding the model learning started from;
- ``rows.jsonl``: the rows of the production-data log it learned, read by Delta time travel at
  its data version and restricted to its seq range, in the order they were learned (one JSON
  object a line; floats written exactly);
- ``export.json``: what was exported and how to retrain (batch size, row count, sha256 of rows).

``retrain`` learns those rows with ``partial_fit`` in batches, as the learner did, starting from
the lineage's initial model; the result equals the snapshot's model.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mlserving.learning.datalog import DataLog
from mlserving.learning.learner import OnlineLearner
from mlserving.learning.location import StorageLocation
from mlserving.learning.manifest import SnapshotError
from mlserving.learning.snapshots import MANIFEST_FILE, STATE_FILE, SnapshotStore, read_learner_state

ROWS_FILE = "rows.jsonl"
SUMMARY_FILE = "export.json"
INITIAL_DIR = "initial"


@dataclass(frozen=True)
class ExportSummary:
    directory: Path
    snapshot: int
    initial_snapshot: int
    rows: int
    data_version: int | None
    seq_start: int
    seq_end: int


def lineage_root(store: SnapshotStore, key: bytes, manifest: dict[str, Any]) -> dict[str, Any]:
    """The first snapshot of ``manifest``'s lineage: the one that had learned none of its rows."""
    start, current = manifest.get("data_seq_start"), manifest
    root = manifest.get("lineage_root")
    if isinstance(root, int) and root != manifest.get("version"):
        # named at publish: the snapshots in between may have been deleted by retention
        current = store.read_manifest(root, key)
        if current.get("base_sha256") != manifest.get("base_sha256"):
            raise SnapshotError(
                f"snapshot {manifest['version']}: its lineage root {root} learned from another initial model"
            )
        return current
    while current.get("data_seq_end") != start:
        parent = current.get("parent")
        if parent is None:
            raise SnapshotError(
                f"snapshot {manifest['version']}: no snapshot of its lineage starts at row {start}"
            )
        current = store.read_manifest(int(parent), key)
        if current.get("base_sha256") != manifest.get("base_sha256"):
            raise SnapshotError(
                f"snapshot {manifest['version']}: its parent {parent} learned from another initial model"
            )
    return current


def export_snapshot(location: StorageLocation, key: bytes, version: int, output: Path) -> ExportSummary:
    """Write snapshot ``version``, its lineage's initial model and its rows to ``output``."""
    store = SnapshotStore(location)
    output.mkdir(parents=True, exist_ok=True)
    snapshot = store.load(version, key, dest_dir=output)
    manifest = snapshot.manifest
    (output / MANIFEST_FILE).write_text(json.dumps(manifest, sort_keys=True, indent=2) + "\n")
    root = lineage_root(store, key, manifest)
    initial = store.load(int(root["version"]), key, dest_dir=output / INITIAL_DIR)
    (output / INITIAL_DIR / MANIFEST_FILE).write_text(json.dumps(root, sort_keys=True, indent=2) + "\n")
    seq_start, seq_end = int(manifest["data_seq_start"]), int(manifest["data_seq_end"])
    learner = OnlineLearner(read_learner_state(initial)["estimator"])
    datalog = DataLog(location, n_features=learner.n_features, label_kind=learner.label_kind)
    data_version = manifest.get("data_version")
    count = 0
    with (output / ROWS_FILE).open("w") as rows_file:
        if data_version is not None and seq_end > seq_start:
            rows = datalog.read_rows(int(data_version), seq_start=seq_start, seq_end=seq_end)
            count = _write_rows(rows, rows_file)
    if count != seq_end - seq_start:
        raise SnapshotError(
            f"snapshot {version}: the data log at version {data_version} holds {count} of its "
            f"{seq_end - seq_start} rows"
        )
    summary = ExportSummary(output, version, int(root["version"]), count, data_version, seq_start, seq_end)
    _write_summary(summary, manifest)
    return summary


def _write_rows(rows: Any, out: Any) -> int:
    for i in range(len(rows)):
        record = {
            "seq": int(rows.seq[i]),
            "request_id": rows.request_id[i],
            "row": int(rows.row[i]),
            "features": rows.features[i].tolist(),
            "label": rows.label[i],
            "prediction": rows.prediction[i],
            "snapshot": rows.snapshot[i],
            "requested_at": float(rows.requested_at[i]),
            "labelled_at": float(rows.labelled_at[i]),
        }
        out.write(json.dumps(record) + "\n")
    return len(rows)


def _write_summary(summary: ExportSummary, manifest: dict[str, Any]) -> None:
    digest = hashlib.sha256((summary.directory / ROWS_FILE).read_bytes()).hexdigest()
    document = {
        "model": manifest.get("model"),
        "snapshot": summary.snapshot,
        "estimator": manifest.get("estimator"),
        "initial_snapshot": summary.initial_snapshot,
        "data_version": summary.data_version,
        "seq_range": [summary.seq_start, summary.seq_end],
        "rows": summary.rows,
        "rows_sha256": digest,
        "batch_size": manifest.get("batch_size"),
        "retrain": "start from initial/learner.skops (its estimator) and partial_fit rows.jsonl in "
        "order, batch_size rows at a time (classes fixed to the initial model's)",
    }
    (summary.directory / SUMMARY_FILE).write_text(json.dumps(document, indent=2) + "\n")


def read_rows(directory: Path) -> tuple[np.ndarray, list[Any]]:
    """Features and labels of an export's ``rows.jsonl``, in learning order."""
    features, labels = [], []
    with (directory / ROWS_FILE).open() as rows_file:
        for line in rows_file:
            record = json.loads(line)
            features.append(record["features"])
            labels.append(record["label"])
    return np.asarray(features, dtype=np.float64), labels


def retrain(directory: Path) -> Any:
    """The model learned again from an export: the lineage's initial model, then ``partial_fit`` on
    the exported rows in batches (trailing rows short of a batch were not learned either)."""
    summary = json.loads((directory / SUMMARY_FILE).read_text())
    state = read_learner_state_file(directory / INITIAL_DIR)
    estimator = state["estimator"]
    x, labels = read_rows(directory)
    batch = int(summary["batch_size"])
    classes = getattr(estimator, "classes_", None)
    y = np.asarray(
        labels, dtype=classes.dtype if classes is not None and classes.dtype.kind in "iufb" else None
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for start in range(0, len(y) - len(y) % batch, batch):
            part = slice(start, start + batch)
            if classes is not None:
                estimator.partial_fit(x[part], y[part], classes=classes)
            else:
                estimator.partial_fit(x[part], y[part])
    return estimator


def read_learner_state_file(snapshot_dir: Path) -> Any:
    """The learner state of an exported snapshot, checked against the sha256 its manifest lists
    (the manifest's signature was verified when it was exported)."""
    import skops.io as sio

    manifest = json.loads((snapshot_dir / MANIFEST_FILE).read_text())
    data = (snapshot_dir / STATE_FILE).read_bytes()
    if hashlib.sha256(data).hexdigest() != manifest["files"][STATE_FILE]:
        raise SnapshotError(f"{snapshot_dir / STATE_FILE}: its sha256 is not the one its manifest lists")
    return sio.loads(data, trusted=sio.get_untrusted_types(data=data))
