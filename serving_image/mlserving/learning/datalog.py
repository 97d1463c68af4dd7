"""The production-data log: every joined row, appended to a Delta Lake table under ``<storage>/data``.

Each append is one Delta commit, so each table version is a data version. The table is created
with ``delta.appendOnly=true``: Delta itself refuses any delete, update or overwrite, and time
travel to a version returns exactly the rows a snapshot learned from.

Columns: ``seq`` (position in the log, from 0, gap-free), ``request_id``, ``row`` (index of the row
in its request), ``features`` (list of float64), ``label`` and ``prediction`` (typed as the model's
classes, or float64 for a regressor; prediction is null when the replica did not log it or it does
not fit the type), ``snapshot`` (the snapshot that predicted), ``requested_at``, ``labelled_at``
(UTC timestamps).

Appends are idempotent across failures: each commit records the last seq it holds as a Delta
application transaction, so a retried append after an ambiguous error (a commit that succeeded but
whose answer was lost) is recognised and not written twice.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from mlserving.learning.location import StorageLocation
from mlserving.learning.records import JoinedRequest

APP_ID = "mlserving-learner"
LABEL_KINDS = ("int", "float", "bool", "string")


@dataclass(frozen=True)
class Commit:
    """One append: its table version and the seq range it holds (``seq_end`` exclusive)."""

    version: int
    seq_start: int
    seq_end: int


@dataclass
class LoggedRows:
    """Rows read back from the log, ordered by seq."""

    seq: np.ndarray
    request_id: list[str]
    row: np.ndarray
    features: np.ndarray  # (rows, n_features)
    label: list[Any]
    prediction: list[Any]
    snapshot: list[int | None]
    requested_at: np.ndarray  # Unix seconds
    labelled_at: np.ndarray

    def __len__(self) -> int:
        return len(self.seq)


class DataLog:
    def __init__(
        self, location: StorageLocation, *, n_features: int, label_kind: str, name: str = ""
    ) -> None:
        if label_kind not in LABEL_KINDS:
            raise ValueError(f"label_kind: one of {', '.join(LABEL_KINDS)}, got {label_kind!r}")
        self.location = location
        self.n_features = int(n_features)
        self.label_kind = label_kind
        self.name = name
        self._table: Any = None
        self.next_seq = 0

    @property
    def version(self) -> int | None:
        """The table's current version (None before the first append)."""
        return None if self._table is None else int(self._table.version())

    def open(self) -> None:
        """Load the table if it exists and continue its seq numbering."""
        from deltalake import DeltaTable

        uri, options = self.location.data_uri, self.location.delta_options
        if not DeltaTable.is_deltatable(uri, storage_options=options):
            self._table, self.next_seq = None, 0
            return
        self._table = DeltaTable(uri, storage_options=options)
        last = self._table.transaction_version(APP_ID)
        self.next_seq = 0 if last is None else int(last) + 1

    def append(self, joined: Sequence[JoinedRequest]) -> Commit:
        """Append the rows of ``joined`` in one commit; retrying after an error never duplicates."""
        from deltalake import CommitProperties, Transaction, write_deltalake

        seq_start = self.next_seq
        table = self._arrow_table(joined, seq_start)
        seq_end = seq_start + table.num_rows
        if seq_end == seq_start:
            raise ValueError("append: no rows")
        commit_properties = CommitProperties(app_transactions=[Transaction(APP_ID, seq_end - 1)])
        try:
            if self._table is None:
                write_deltalake(
                    self.location.data_uri,
                    table,
                    mode="append",
                    storage_options=self.location.delta_options,
                    commit_properties=commit_properties,
                    configuration={"delta.appendOnly": "true"},
                    name=self.name or None,
                    description="production-data log of an online learner: joined, labelled requests",
                )
            else:
                write_deltalake(self._table, table, mode="append", commit_properties=commit_properties)
        except Exception:
            if not self._committed_through(seq_end - 1):
                raise
        if self._table is None:
            self.open()
        self.next_seq = seq_end
        return Commit(version=int(self._table.version()), seq_start=seq_start, seq_end=seq_end)

    def _committed_through(self, last_seq: int) -> bool:
        try:
            self.open()
        except Exception:
            return False
        return self._table is not None and self.next_seq > last_seq

    # ---------------------------------------------------------------- reading

    def read_rows(
        self, up_to_version: int | None = None, *, seq_start: int | None = None, seq_end: int | None = None
    ) -> LoggedRows:
        """The rows of the table as of ``up_to_version`` (time travel; default: latest), by seq."""
        from deltalake import DeltaTable

        uri, options = self.location.data_uri, self.location.delta_options
        if not DeltaTable.is_deltatable(uri, storage_options=options):
            return _rows_from_table(None, self.n_features)
        table = DeltaTable(uri, version=up_to_version, storage_options=options)
        predicate = " AND ".join(
            clause
            for clause in (
                f"seq >= {int(seq_start)}" if seq_start is not None else "",
                f"seq < {int(seq_end)}" if seq_end is not None else "",
            )
            if clause
        )
        return _rows_from_table(table.scan(predicate=predicate or None).read_all(), self.n_features)

    def recent_request_ids(self, rows: int) -> list[str]:
        """The request ids of the last ``rows`` rows of the log (oldest first, each id once)."""
        from deltalake import DeltaTable

        if self._table is None or rows <= 0 or self.next_seq == 0:
            return []
        uri, options = self.location.data_uri, self.location.delta_options
        table = DeltaTable(uri, storage_options=options)
        start = max(0, self.next_seq - int(rows))
        read = table.scan(columns=["seq", "request_id"], predicate=f"seq >= {start}").read_all()
        if read.num_rows == 0:
            return []
        seq = read.column("seq").combine_chunks().to_numpy()
        ids = read.column("request_id").combine_chunks().to_pylist()
        return list(dict.fromkeys(ids[i] for i in np.argsort(seq, kind="stable").tolist()))

    # ---------------------------------------------------------------- arrow

    def _arrow_table(self, joined: Sequence[JoinedRequest], seq_start: int) -> Any:
        import arro3.core as ac

        counts = [j.request.rows for j in joined]
        n = sum(counts)
        features = (
            np.concatenate([j.request.features for j in joined]) if joined else np.empty((0, self.n_features))
        )
        offsets = np.arange(0, n * self.n_features + 1, self.n_features, dtype=np.int32)
        labels = [label for j in joined for label in j.labels]
        predictions = [_fits(p, self.label_kind) for j in joined for p in j.request.prediction]
        snapshots = [j.request.snapshot for j in joined for _ in range(j.request.rows)]
        return ac.Table.from_pydict(
            {
                "seq": ac.Array(np.arange(seq_start, seq_start + n, dtype=np.int64)),
                "request_id": ac.Array(
                    [j.request.id for j in joined for _ in range(j.request.rows)], type=ac.DataType.string()
                ),
                "row": ac.Array(
                    np.concatenate([np.arange(c, dtype=np.int32) for c in counts])
                    if joined
                    else np.empty(0, np.int32)
                ),
                "features": ac.list_array(ac.Array(offsets), ac.Array(features.reshape(-1))),
                "label": _typed(labels, self.label_kind),
                "prediction": _typed(predictions, self.label_kind),
                "snapshot": ac.Array(snapshots, type=ac.DataType.int64()),
                "requested_at": _timestamps([j.request.requested_at for j in joined], counts),
                "labelled_at": _timestamps([j.labelled_at for j in joined], counts),
            }
        )


def _arrow_type(kind: str) -> Any:
    import arro3.core as ac

    return {
        "int": ac.DataType.int64(),
        "float": ac.DataType.float64(),
        "bool": ac.DataType.bool(),
        "string": ac.DataType.string(),
    }[kind]


def _typed(values: list[Any], kind: str) -> Any:
    import arro3.core as ac

    if kind in ("int", "float") and all(v is not None for v in values):
        return ac.Array(np.asarray(values, dtype=np.int64 if kind == "int" else np.float64))
    return ac.Array(values, type=_arrow_type(kind))


def _fits(value: Any, kind: str) -> Any:
    """A served prediction as the label's type, or None when it does not fit."""
    if kind == "string":
        return value if isinstance(value, str) else (str(value) if isinstance(value, int) else None)
    if kind == "bool":
        return value if isinstance(value, bool) else None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    if kind == "int":
        return int(value) if float(value).is_integer() else None
    return float(value)


def _timestamps(seconds: list[float], counts: list[int]) -> Any:
    import arro3.core as ac

    micros = np.repeat(np.round(np.asarray(seconds, dtype=np.float64) * 1e6).astype(np.int64), counts)
    return ac.Array(micros).cast(ac.DataType.timestamp("us", tz="UTC"))


def _rows_from_table(table: Any, n_features: int) -> LoggedRows:
    if table is None or table.num_rows == 0:
        return LoggedRows(
            seq=np.empty(0, np.int64),
            request_id=[],
            row=np.empty(0, np.int32),
            features=np.empty((0, n_features)),
            label=[],
            prediction=[],
            snapshot=[],
            requested_at=np.empty(0),
            labelled_at=np.empty(0),
        )
    import arro3.core as ac

    def column(name: str) -> Any:
        return table.column(name).combine_chunks()

    def seconds(name: str) -> np.ndarray:
        return np.asarray(column(name).cast(ac.DataType.int64()).to_numpy(), dtype=np.float64) / 1e6

    seq = column("seq").to_numpy()
    order = np.argsort(seq, kind="stable")
    features = ac.list_flatten(column("features")).to_numpy().reshape(-1, n_features)

    def listed(name: str) -> list[Any]:
        values = column(name).to_pylist()
        return [values[i] for i in order.tolist()]

    return LoggedRows(
        seq=seq[order],
        request_id=listed("request_id"),
        row=column("row").to_numpy()[order],
        features=features[order],
        label=listed("label"),
        prediction=listed("prediction"),
        snapshot=listed("snapshot"),
        requested_at=seconds("requested_at")[order],
        labelled_at=seconds("labelled_at")[order],
    )
