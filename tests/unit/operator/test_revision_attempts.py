"""A revision rolled out again starts a new attempt: the attempts before it stay in its record exactly
as they ended, through every pass and every status round trip, and the record's outcome, message and
finishedAt are the current attempt's."""

from __future__ import annotations

from mlrollouts.api.modeldeployment import PREVIOUS_ATTEMPTS_LIMIT
from mlrollouts.cli.undo import apply_merge_patch, choose, undo_patch
from mlrollouts.rollout import Action
from support.rollout_sim import Cluster


def started() -> Cluster:
    cluster = Cluster(scaleDownDelay="30s")
    for _ in range(3):
        cluster.tick()
    return cluster


def test_retry_after_a_rollback_keeps_the_rolled_back_attempt_and_ends_promoted():
    cluster = started()
    v2 = cluster.deploy("file:///models/v2.onnx")
    started_at = cluster.record(v2)["startedAt"]
    cluster.fail()
    first = cluster.record(v2)
    assert first["attempt"] == 1 and first["outcome"] == "RolledBack"
    assert first["message"].startswith("AnalysisFailed: analysis failed 2 times")
    assert "previousAttempts" not in first
    cluster.tick(60)
    written = len(cluster.passes)

    cluster.tick(action=Action.RETRY)
    assert cluster.status["candidateRevision"] == v2
    retried = cluster.record(v2)
    # the first attempt, as it ended; the record now describes the second one, which has not ended
    assert retried["previousAttempts"] == [
        {
            "attempt": 1,
            "startedAt": started_at,
            "finishedAt": first["finishedAt"],
            "outcome": "RolledBack",
            "message": first["message"],
        }
    ]
    assert retried["attempt"] == 2 and retried["startedAt"] == cluster.now.isoformat().replace("+00:00", "Z")
    assert retried["startedAt"] != retried["createdAt"] == first["createdAt"]
    assert "outcome" not in retried and "message" not in retried and "finishedAt" not in retried

    cluster.pass_all_steps()
    promoted = cluster.record(v2)
    assert cluster.status["stableRevision"] == v2
    assert promoted["attempt"] == 2 and promoted["outcome"] == "Promoted"
    assert promoted["message"] == "promoted after 2 of 2 steps"
    assert promoted["previousAttempts"] == retried["previousAttempts"]
    # written once, never changed by a later pass
    for status in cluster.passes[written:]:
        record = next(r for r in status["revisions"] if r["revision"] == v2)
        assert record["previousAttempts"] == retried["previousAttempts"]


def test_spec_back_on_an_older_promoted_revision_starts_its_second_attempt():
    cluster = started()
    v1 = cluster.status["stableRevision"]
    v2 = cluster.deploy("file:///models/v2.onnx")
    cluster.pass_all_steps()
    cluster.deploy("file:///models/v3.onnx")
    cluster.pass_all_steps()
    v1_done = cluster.record(v1)
    assert v1_done["outcome"] == "Superseded" and v1_done["message"] == f"superseded by {v2}"
    assert cluster.record(v2)["outcome"] == "Promoted"
    cluster.tick(60)

    # `mlrollouts undo` to v2, read from the records as always
    chosen = choose(cluster.obj, v2[:8])
    patch = undo_patch(cluster.obj, chosen)
    cluster.set_spec(apply_merge_patch(cluster.obj["spec"], patch["spec"]))
    assert cluster.status["candidateRevision"] == v2
    again = cluster.record(v2)
    [earlier] = again["previousAttempts"]
    assert earlier["attempt"] == 1 and earlier["outcome"] == "Promoted"
    assert earlier["message"].startswith("promoted after 2 of 2 steps")
    assert earlier["finishedAt"] <= again["startedAt"]
    assert again["attempt"] == 2 and "outcome" not in again and "finishedAt" not in again
    assert again["template"] == chosen["template"]

    cluster.pass_all_steps()
    done = cluster.record(v2)
    assert cluster.status["stableRevision"] == v2
    assert done["outcome"] == "Promoted" and done["previousAttempts"] == [earlier]
    assert cluster.record(v1) == v1_done  # a revision not rolled out again is untouched


def test_only_the_last_attempts_are_kept_and_the_attempt_number_counts_them_all():
    cluster = started()
    v2 = cluster.deploy("file:///models/v2.onnx")
    for _ in range(PREVIOUS_ATTEMPTS_LIMIT + 2):
        cluster.tick(5, action=Action.ABORT)
        cluster.tick(5)
        cluster.tick(5, action=Action.RETRY)
    record = cluster.record(v2)
    attempts = record["previousAttempts"]
    assert record["attempt"] == PREVIOUS_ATTEMPTS_LIMIT + 3
    assert [a["attempt"] for a in attempts] == list(range(3, PREVIOUS_ATTEMPTS_LIMIT + 3))
    assert all(a["outcome"] == "RolledBack" and a["message"].startswith("Aborted") for a in attempts)
    assert all(a["startedAt"] < a["finishedAt"] for a in attempts)


def test_a_status_written_before_attempts_were_recorded_reads_as_the_first_attempt():
    cluster = started()
    v2 = cluster.deploy("file:///models/v2.onnx")
    cluster.fail()
    old = cluster.record(v2)
    for record in cluster.status["revisions"]:
        del record["attempt"], record["startedAt"]
    cluster.tick(5, action=Action.RETRY)
    [earlier] = cluster.record(v2)["previousAttempts"]
    assert earlier == {
        "attempt": 1,
        "startedAt": old["createdAt"],
        "finishedAt": old["finishedAt"],
        "outcome": "RolledBack",
        "message": old["message"],
    }
