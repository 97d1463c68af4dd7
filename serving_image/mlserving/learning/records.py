"""Logged requests, as serving replicas send them, and the rows they become once labelled.

A batch sent to ``POST /v1/log`` is ``{"records": [record, ...]}``; a record is::

    {"id": "<response id>",                 # the id the response carried
     "features": [[x11, x12, ...], ...],    # one row per input row, or a flat list for one row
     "prediction": [p1, ...],               # the served prediction, one per row (a scalar for one row)
     "snapshot": 3,                         # the snapshot that predicted (0: the initial model)
     "time": 1718000000.123}                # when it was served, Unix seconds (default: arrival)

A bad record is refused alone, with the field named (``records[4].features: ...``); the rest of
the batch is accepted.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

MAX_ID_LENGTH = 256
MAX_ROWS_PER_RECORD = 4096
# Replica clocks may run ahead of the learner's; a record further ahead than this is refused.
MAX_CLOCK_SKEW_SECONDS = 300.0


class RecordError(ValueError):
    """A logged record is malformed; the message starts with the field."""


@dataclass(frozen=True, slots=True)
class LoggedRequest:
    """One served request: its response id, inputs, served prediction and the snapshot that served it."""

    id: str
    features: np.ndarray  # (rows, n_features), float64
    prediction: tuple[Any, ...]  # one per row; None when the replica did not say
    snapshot: int | None
    requested_at: float  # Unix seconds

    @property
    def rows(self) -> int:
        return int(self.features.shape[0])


@dataclass(frozen=True, slots=True)
class JoinedRequest:
    """A logged request and the labels its feedback gave, one per row."""

    request: LoggedRequest
    labels: tuple[Any, ...]
    labelled_at: float


def parse_record(record: Any, *, field: str, n_features: int, now: float) -> LoggedRequest:
    """Check one logged record; ``field`` prefixes every error (e.g. ``records[3]``)."""
    if not isinstance(record, dict):
        raise RecordError(f"{field}: must be an object with id, features, prediction, snapshot, time")
    response_id = record.get("id")
    if not isinstance(response_id, str) or not response_id or len(response_id) > MAX_ID_LENGTH:
        raise RecordError(f"{field}.id: must be a non-empty string of at most {MAX_ID_LENGTH} characters")
    features = _features(record.get("features"), field=f"{field}.features", n_features=n_features)
    prediction = _per_row(record.get("prediction"), rows=features.shape[0], field=f"{field}.prediction")
    return LoggedRequest(
        id=response_id,
        features=features,
        prediction=prediction,
        snapshot=_snapshot(record.get("snapshot"), field=f"{field}.snapshot"),
        requested_at=_time(record.get("time"), field=f"{field}.time", now=now),
    )


def parse_log_batch(document: Any, *, n_features: int, now: float) -> tuple[list[LoggedRequest], list[str]]:
    """The valid records of a ``/v1/log`` body and one error per refused record."""
    if not isinstance(document, dict) or not isinstance(document.get("records"), list):
        raise RecordError('records: the body must be {"records": [...]}')
    accepted: list[LoggedRequest] = []
    errors: list[str] = []
    for index, record in enumerate(document["records"]):
        try:
            accepted.append(parse_record(record, field=f"records[{index}]", n_features=n_features, now=now))
        except RecordError as exc:
            errors.append(str(exc))
    return accepted, errors


def _features(value: Any, *, field: str, n_features: int) -> np.ndarray:
    if not isinstance(value, list) or not value:
        raise RecordError(f"{field}: must be a non-empty list of numbers, or of rows of numbers")
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise RecordError(f"{field}: must hold only numbers, in rows of equal length") from None
    if array.ndim == 1:
        array = array.reshape(1, -1)
    if array.ndim != 2:
        raise RecordError(f"{field}: must be a list of numbers or a list of rows, not {array.ndim}-D")
    if array.shape[1] != n_features:
        raise RecordError(f"{field}: the model takes {n_features} features per row, got {array.shape[1]}")
    if array.shape[0] > MAX_ROWS_PER_RECORD:
        raise RecordError(f"{field}: {array.shape[0]} rows is more than {MAX_ROWS_PER_RECORD}")
    if not np.isfinite(array).all():
        raise RecordError(f"{field}: NaN and infinite values cannot be learned from")
    return array


def _per_row(value: Any, *, rows: int, field: str) -> tuple[Any, ...]:
    if value is None:
        return (None,) * rows
    if isinstance(value, list):
        if len(value) != rows:
            raise RecordError(f"{field}: one value per row expected ({rows}), got {len(value)}")
        return tuple(value)
    if rows != 1:
        raise RecordError(f"{field}: a request of {rows} rows needs a list of {rows} values")
    return (value,)


def _snapshot(value: Any, *, field: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise RecordError(f"{field}: must be a snapshot number (an integer >= 0)")
    return value


def _time(value: Any, *, field: str, now: float) -> float:
    if value is None:
        return now
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise RecordError(f"{field}: must be Unix seconds (a number)")
    if value > now + MAX_CLOCK_SKEW_SECONDS:
        raise RecordError(f"{field}: {value - now:.0f} s in the future (the replica's clock is wrong)")
    return float(value)


def labels_per_row(label: Any, *, rows: int, field: str) -> Sequence[Any]:
    """A feedback label for a request of ``rows`` rows: a scalar for one row, else a list of ``rows``."""
    if isinstance(label, list):
        if len(label) != rows:
            raise RecordError(f"{field}: one label per row expected ({rows}), got {len(label)}")
        return label
    if rows != 1:
        raise RecordError(f"{field}: the request had {rows} rows; give a list of {rows} labels")
    return (label,)
