"""History is written once and stays true: each analysis run names the revision it judged, and a
revision's outcome and the reason it ended survive later rollouts and every status round trip."""

from __future__ import annotations

from mlrollouts.core.verdicts import Verdict
from support.rollout_sim import Cluster


def test_runs_outcomes_and_messages_stay_as_written_across_a_rollback_and_a_promotion():
    cluster = Cluster()
    for _ in range(3):
        cluster.tick()
    v1 = cluster.status["stableRevision"]
    assert cluster.records()[v1]["outcome"] == "Serving"

    v2 = cluster.deploy("file:///models/v2.onnx")
    cluster.tick(5, Verdict.FAIL)
    cluster.tick(5, Verdict.FAIL)
    assert cluster.status["phase"] == "Degraded" and cluster.status["failedRevision"] == v2
    # after the rollback there is no candidate, and the failed runs still name the revision they judged
    assert cluster.status.get("candidateRevision") is None
    assert [r["verdict"] for r in cluster.runs_of(v2)] == ["Fail", "Fail"]
    rolled_back = cluster.records()[v2]
    assert rolled_back["outcome"] == "RolledBack"
    assert rolled_back["message"].startswith("AnalysisFailed: analysis failed 2 times")

    v3 = cluster.deploy("file:///models/v3.onnx")
    for _ in range(2):
        cluster.tick(5, Verdict.PASS)
        cluster.tick(5, Verdict.PASS)
        cluster.tick()
    assert cluster.status["phase"] == "Healthy" and cluster.status["stableRevision"] == v3
    records = cluster.records()
    assert records[v2] == rolled_back  # a final outcome and its message never change
    assert records[v3]["outcome"] == "Promoted" and records[v3]["message"] == "promoted after 2 of 2 steps"
    assert records[v1]["outcome"] == "Superseded" and records[v1]["message"] == f"superseded by {v3}"
    assert [r["verdict"] for r in cluster.runs_of(v2)] == ["Fail", "Fail"]
    assert [r["verdict"] for r in cluster.runs_of(v3)] == ["Pass"] * 4
    assert all(r.get("revision") in (v2, v3) for r in cluster.status["analysis"]["runs"])

    v4 = cluster.deploy("file:///models/v4.onnx")
    cluster.tick(5, Verdict.PASS)
    cluster.deploy("file:///models/v5.onnx")  # v4 withdrawn mid-rollout
    records = cluster.records()
    assert records[v3]["outcome"] == "Promoted"  # still the stable: its outcome is how its rollout ended
    assert records[v4]["outcome"] == "Superseded"
    assert "withdrawn mid-rollout" in records[v4]["message"]
    assert records[v2] == rolled_back


def test_a_run_that_judged_another_revision_is_not_recorded():
    cluster = Cluster()
    for _ in range(3):
        cluster.tick()
    v2 = cluster.deploy("file:///models/v2.onnx")
    cluster.tick(5, Verdict.FAIL, judged="0123456789")
    assert cluster.status["analysis"]["runs"] == []
    assert cluster.status["analysis"]["consecutiveFailures"] == 0
    cluster.tick(0, Verdict.FAIL)
    assert [r["revision"] for r in cluster.status["analysis"]["runs"]] == [v2]
