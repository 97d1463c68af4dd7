"""What the controller reads from a ModelDeployment, and how it recognises a body older than its
own last status write."""

from __future__ import annotations

from mlrollouts.controller.experiment import ExperimentController, target_of


def test_target_from_the_model_deployment_status():
    md = {"spec": {"model": {"uri": "s3://m", "name": "fraud"}}, "status": {"stableRevision": "5f2a1c"}}
    target = target_of("wide", "fraud-v2", md)
    assert target.usable and (target.model, target.revision) == ("fraud", "5f2a1c")


def test_served_model_name_defaults_to_the_resource_name():
    target = target_of(
        "wide", "fraud-v2", {"spec": {"model": {"uri": "s3://m"}}, "status": {"stableRevision": "r"}}
    )
    assert target.model == "fraud-v2"


def test_missing_or_not_yet_serving_model_deployments_are_named():
    assert "'fraud-v2' not found" in (target_of("wide", "fraud-v2", None).problem or "")
    pending = target_of("wide", "fraud-v2", {"spec": {"model": {"uri": "s3://m"}}, "status": {}})
    assert not pending.usable and "no stable revision" in (pending.problem or "")


def test_progress_key_compares_instants_not_spellings():
    written = {
        "startedAt": "2026-01-05T12:00:00Z",
        "lastUpdateAt": "2026-01-05T12:00:10Z",
        "phase": "Running",
    }
    echoed = {
        "startedAt": "2026-01-05T12:00:00+00:00",
        "lastUpdateAt": "2026-01-05T12:00:10.000Z",
        "phase": "Running",
    }
    assert ExperimentController().progress_key(written) == ExperimentController().progress_key(echoed)
    older = {**written, "lastUpdateAt": "2026-01-05T12:00:07Z"}
    assert ExperimentController().progress_key(older) != ExperimentController().progress_key(written)
    assert ExperimentController().progress_key({}) != ExperimentController().progress_key(written)
