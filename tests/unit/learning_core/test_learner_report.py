"""Reading the learner's ``GET /v1/status``: the fields the decisions need, malformed ones named."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from mlrollouts.learning import ReportError, parse_report

STATUS = {
    "model": "iris",
    "ready": True,
    "samples": 96,
    "metrics": {"accuracy": 0.91, "logLoss": 0.3, "broken": float("nan")},
    "latest": 2,
    "serving": 1,
    "pinned": 1,
    "data_version": 7,
    "storage": {"available": False, "last_error": "append: OSError: disk full"},
    "snapshots": [
        {
            "version": 2,
            "parent": 1,
            "created": "2026-03-02T09:00:02.000Z",
            "samples": 64,
            "metrics": {"accuracy": 0.9},
            "data_version": 5,
            "data_seq_start": 0,
            "data_seq_end": 64,
        },
        {
            "version": 0,
            "parent": None,
            "created": "2026-03-02T09:00:00.000Z",
            "samples": 0,
            "metrics": {},
            "data_version": None,
            "data_seq_start": 0,
            "data_seq_end": 0,
        },
    ],
    "future_field": {"ignored": True},
}


def test_a_status_document_becomes_a_report():
    report = parse_report(STATUS)
    assert (report.ready, report.samples, report.latest, report.serving, report.pinned) == (True, 96, 2, 1, 1)
    assert report.metrics == {"accuracy": 0.91, "logLoss": 0.3}  # a NaN is no measurement
    assert (report.storage_available, report.storage_error) == (False, "append: OSError: disk full")
    assert [s.version for s in report.snapshots] == [0, 2]
    newest = report.snapshots[1]
    assert newest.created == datetime(2026, 3, 2, 9, 0, 2, tzinfo=UTC)
    assert (newest.samples, newest.data_version, newest.data_range) == (64, 5, "[0, 64)")


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"samples": "many"}, "samples"),
        ({"latest": -1}, "latest"),
        ({"pinned": True}, "pinned"),
        ({"metrics": [1, 2]}, "metrics"),
        ({"snapshots": {"0": {}}}, "snapshots"),
        ({"snapshots": [{"parent": 1}]}, "snapshots[0].version"),
        ({"snapshots": [{"version": 1, "samples": 2.5}]}, "snapshots[0].samples"),
    ],
)
def test_a_malformed_field_is_named(change, field):
    with pytest.raises(ReportError) as refused:
        parse_report({**STATUS, **change})
    assert str(refused.value).startswith(f"{field}:")


def test_a_document_that_is_not_an_object_is_refused():
    with pytest.raises(ReportError, match="not a JSON object"):
        parse_report(["ready"])


def test_the_api_offers_exactly_the_estimators_the_learner_updates_online():
    from mlrollouts.api.modeldeployment import LearningAlgorithm
    from mlserving.learning.learner import ONLINE_ESTIMATORS

    assert sorted(a.value for a in LearningAlgorithm) == sorted(ONLINE_ESTIMATORS)
