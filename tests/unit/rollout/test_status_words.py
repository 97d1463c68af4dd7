"""The status says what the rollout is doing now, in the numbers people count."""

from __future__ import annotations

from test_history_truth import Cluster

from mlrollouts.api import MODEL_DEPLOYMENT
from mlrollouts.api.crd import PRINTER_COLUMNS
from mlrollouts.core.verdicts import Verdict


def printer_column(obj: dict, name: str) -> object:
    [column] = [c for c in PRINTER_COLUMNS[MODEL_DEPLOYMENT.kind] if c.name == name]
    value: object = obj
    for part in column.json_path.strip(".").split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def test_message_and_step_follow_the_candidate_once_it_serves():
    cluster = Cluster()
    for _ in range(3):
        cluster.tick()
    cluster.obj["spec"]["model"]["uri"] = "file:///models/v2.onnx"
    cluster.obj["metadata"]["generation"] += 1
    cluster.tick()
    candidate = cluster.status["candidateRevision"]
    assert cluster.status["message"] == f"waiting for revision {candidate} to become ready"
    cluster.tick()
    cluster.tick()
    weights = {w["revision"]: w["desired"] for w in cluster.status["weights"]}
    assert weights[candidate] == 20
    assert "waiting for revision" not in cluster.status["message"]
    assert cluster.status["message"] == f"step 1/2: weight 20% to revision {candidate}"
    assert printer_column(cluster.obj, "Step") == "1/2" == cluster.status["step"]

    cluster.tick(5, Verdict.PASS)
    cluster.tick(5, Verdict.PASS)
    cluster.tick()
    assert cluster.status["currentStep"] == 1
    assert printer_column(cluster.obj, "Step") == "2/2"
    assert cluster.status["message"].startswith("step 2/2: weight 50%")


def test_analysis_samples_are_whole_requests():
    cluster = Cluster()
    for _ in range(3):
        cluster.tick()
    cluster.deploy("file:///models/v2.onnx")
    cluster.tick(5, Verdict.PASS, samples=253.14)
    [run] = cluster.status["analysis"]["runs"]
    assert run["samples"] == 253, run
