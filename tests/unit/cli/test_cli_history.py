"""`history`: one row per attempt of each revision, the earlier attempts as they ended, then the
current one."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from mlrollouts.api import ModelDeploymentStatus
from mlrollouts.cli.plugin import render_history

NOW = datetime(2026, 1, 10, tzinfo=UTC)


def at(**ago: float) -> str:
    return (NOW - timedelta(**ago)).isoformat().replace("+00:00", "Z")


def attempt(number: int, outcome: str, message: str, started: float, finished: float) -> dict:
    return {
        "attempt": number,
        "startedAt": at(hours=started),
        "finishedAt": at(hours=finished),
        "outcome": outcome,
        "message": message,
    }


def rows_of(text: str) -> list[list[str]]:
    lines = text.splitlines()
    header = lines[0]
    starts = [header.index(name) for name in header.split()]
    ends = [*starts[1:], None]
    return [[line[s:e].strip() for s, e in zip(starts, ends, strict=True)] for line in lines]


STATUS = {
    "stableRevision": "aaaa1111",
    "candidateRevision": "bbbb2222",
    "revisions": [
        {
            "revision": "aaaa1111",
            "modelVersion": "1",
            "createdAt": at(days=3),
            "attempt": 1,
            "startedAt": at(days=3),
            "outcome": "Serving",
        },
        {
            "revision": "bbbb2222",
            "modelVersion": "2",
            "modelUri": "s3://m/2",
            "createdAt": at(days=2),
            "attempt": 3,
            "startedAt": at(minutes=5),
            "previousAttempts": [
                attempt(1, "RolledBack", "AnalysisFailed: errors 0.2 > 0.05", started=48, finished=47),
                attempt(2, "RolledBack", "Aborted: by the annotation", started=5, finished=4),
            ],
        },
        {
            "revision": "cccc3333",
            "modelVersion": "3",
            "createdAt": at(days=9),
            "attempt": 14,
            "startedAt": at(days=1),
            "finishedAt": at(hours=20),
            "outcome": "RolledBack",
            "message": "Aborted",
            "previousAttempts": [
                attempt(n, "RolledBack", f"try {n}", started=200 - n, finished=199 - n) for n in range(4, 14)
            ],
        },
    ],
}


def test_each_attempt_is_a_row_with_its_own_outcome_and_times():
    ModelDeploymentStatus.model_validate(STATUS)
    rows = rows_of(render_history({"status": STATUS}, NOW))
    assert rows[0] == [
        "REVISION",
        "NOW",
        "VERSION",
        "ATTEMPT",
        "MODEL",
        "STARTED",
        "FINISHED",
        "OUTCOME",
        "MESSAGE",
    ]
    assert rows[1] == ["aaaa1111", "stable", "1", "1", "-", "3d", "-", "Serving", "-"]
    assert rows[2:5] == [
        [
            "bbbb2222",
            "-",
            "2",
            "1",
            "s3://m/2",
            "2d",
            "47h",
            "RolledBack",
            "AnalysisFailed: errors 0.2 > 0.05",
        ],
        ["bbbb2222", "-", "2", "2", "s3://m/2", "5h", "4h", "RolledBack", "Aborted: by the annotation"],
        ["bbbb2222", "candidate", "2", "3", "s3://m/2", "5m", "-", "-", "-"],
    ]


def test_attempts_no_longer_kept_are_counted_in_one_row():
    rows = rows_of(render_history({"status": STATUS}, NOW))
    c_rows = [r for r in rows if r[0] == "cccc3333"]
    assert len(c_rows) == 12
    assert c_rows[0] == ["cccc3333", "-", "3", "1-3", "-", "-", "-", "-", "3 earlier attempts not kept"]
    assert [r[3] for r in c_rows[1:]] == [str(n) for n in range(4, 15)]
    assert [r[8] for r in c_rows[1:-1]] == [f"try {n}" for n in range(4, 14)]
    assert c_rows[-1][5:] == ["24h", "20h", "RolledBack", "Aborted"]


def test_a_record_without_attempts_is_one_row_started_at_its_creation():
    status = {"revisions": [{"revision": "dddd4444", "createdAt": at(hours=3), "outcome": "Superseded"}]}
    rows = rows_of(render_history({"status": status}, NOW))
    assert rows[1:] == [["dddd4444", "-", "-", "1", "-", "3h", "-", "Superseded", "-"]]
