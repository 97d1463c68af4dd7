"""The production-data log: Delta appends, one version per commit, time travel, append-only."""

from __future__ import annotations

import numpy as np
import pytest
from learning_testing import logged

from mlserving.learning.datalog import DataLog
from mlserving.learning.location import StorageLocation
from mlserving.learning.records import JoinedRequest


def joined(response_id: str, features, labels, *, prediction=None, snapshot=0, at=1000.0, labelled=1001.0):
    request = logged(response_id, features, at=at, prediction=prediction, snapshot=snapshot)
    return JoinedRequest(request, tuple(labels), labelled)


def new_log(tmp_path, label_kind="int", n_features=2) -> DataLog:
    datalog = DataLog(
        StorageLocation((tmp_path / "store").as_uri()), n_features=n_features, label_kind=label_kind
    )
    datalog.open()
    return datalog


def test_each_append_is_one_table_version_and_time_travel_returns_its_rows(tmp_path):
    datalog = new_log(tmp_path)
    assert datalog.version is None
    first = datalog.append(
        [joined("a", [1.0, 2.0], [1], prediction=0), joined("b", [3.0, 4.0], [0], prediction=0)]
    )
    second = datalog.append([joined("c", [[5.0, 6.0], [7.0, 8.0]], [1, 1], prediction=[1, 0], snapshot=2)])
    assert (first.version, first.seq_start, first.seq_end) == (0, 0, 2)
    assert (second.version, second.seq_start, second.seq_end) == (1, 2, 4)

    everything = datalog.read_rows()
    assert everything.seq.tolist() == [0, 1, 2, 3]
    assert everything.request_id == ["a", "b", "c", "c"]
    assert everything.row.tolist() == [0, 0, 0, 1]
    np.testing.assert_array_equal(everything.features, [[1, 2], [3, 4], [5, 6], [7, 8]])
    assert everything.label == [1, 0, 1, 1]
    assert everything.prediction == [0, 0, 1, 0]
    assert everything.snapshot == [0, 0, 2, 2]
    assert everything.requested_at.tolist() == [1000.0] * 4
    assert everything.labelled_at.tolist() == [1001.0] * 4

    as_of_first = datalog.read_rows(up_to_version=0)
    assert as_of_first.request_id == ["a", "b"]
    assert datalog.read_rows(seq_start=1, seq_end=3).seq.tolist() == [1, 2]


def test_a_reopened_log_continues_its_seq_numbering(tmp_path):
    datalog = new_log(tmp_path)
    datalog.append([joined("a", [1.0, 2.0], [1])])
    reopened = new_log(tmp_path)
    assert reopened.next_seq == 1
    commit = reopened.append([joined("b", [1.0, 2.0], [0])])
    assert (commit.version, commit.seq_start) == (1, 1)


def test_the_table_refuses_deletes_and_overwrites(tmp_path):
    from deltalake import DeltaTable, write_deltalake
    from deltalake.exceptions import CommitFailedError

    datalog = new_log(tmp_path)
    datalog.append([joined("a", [1.0, 2.0], [1]), joined("b", [1.0, 2.0], [0])])
    table = DeltaTable(datalog.location.data_uri)
    with pytest.raises(CommitFailedError, match="append-only"):
        table.delete("seq = 0")
    rows = table.scan().read_all()
    with pytest.raises(CommitFailedError, match="append-only"):
        write_deltalake(table, rows, mode="overwrite")
    assert len(datalog.read_rows()) == 2


def test_labels_are_typed_like_the_classes_and_odd_predictions_become_null(tmp_path):
    strings = new_log(tmp_path / "s", label_kind="string", n_features=1)
    strings.append(
        [joined("a", [1.0], ["cat"], prediction="dog"), joined("b", [2.0], ["dog"], prediction=3.5)]
    )
    rows = strings.read_rows()
    assert rows.label == ["cat", "dog"]
    assert rows.prediction == ["dog", None]

    floats = new_log(tmp_path / "f", label_kind="float", n_features=1)
    floats.append([joined("a", [1.0], [151.5], prediction=140.25), joined("b", [2.0], [3.0], snapshot=None)])
    rows = floats.read_rows()
    assert rows.label == [151.5, 3.0]
    assert rows.prediction == [140.25, None]
    assert rows.snapshot == [0, None]


def test_an_empty_or_missing_log_reads_as_no_rows(tmp_path):
    datalog = new_log(tmp_path)
    assert len(datalog.read_rows()) == 0
    datalog.append([joined("a", [1.0, 2.0], [1])])
    assert len(datalog.read_rows(seq_start=5)) == 0
    with pytest.raises(ValueError, match="no rows"):
        datalog.append([])


def test_an_unknown_label_kind_is_refused(tmp_path):
    with pytest.raises(ValueError, match="label_kind"):
        DataLog(StorageLocation(tmp_path.as_uri()), n_features=1, label_kind="complex")
