"""`undo`: the merge patch it prints, and the revision history that makes it possible."""

from __future__ import annotations

from datetime import UTC, datetime

from mlrollouts.api import ModelDeploymentStatus
from mlrollouts.cli.undo import apply_merge_patch, changes, merge_patch
from mlrollouts.rollout import RevisionRecord, RolloutSpec, RolloutState
from mlrollouts.rollout.resource import status_from_state

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def test_merge_patch_removes_what_the_target_lacks_and_replaces_lists_whole():
    current = {"uri": "s3://m/3", "version": "3", "format": "onnx", "env": [{"name": "A", "value": "1"}]}
    wanted = {"uri": "s3://m/1", "format": "onnx", "env": []}
    patch = merge_patch(current, wanted)
    assert patch == {"uri": "s3://m/1", "version": None, "env": []}
    assert apply_merge_patch(current, patch) == wanted
    assert set(changes(current, patch, "spec.model")) == {
        'spec.model.uri: "s3://m/3" -> "s3://m/1"',
        'spec.model.version: "3" -> (removed)',
        'spec.model.env: [{"name": "A", "value": "1"}] -> []',
    }


def test_merge_patch_leaves_unset_what_the_revision_only_has_empty():
    current = {"uri": "s3://m/3", "version": "3"}
    wanted = {
        "uri": "s3://m/2",
        "version": "2",
        "trustedTypes": [],
        "resources": {"limits": {}, "requests": {}},
    }
    patch = merge_patch(current, wanted)
    assert patch == {"uri": "s3://m/2", "version": "2"}
    assert set(changes(current, patch, "spec.model")) == {
        'spec.model.uri: "s3://m/3" -> "s3://m/2"',
        'spec.model.version: "3" -> "2"',
    }


def test_the_revision_history_keeps_the_spec_of_each_revision_it_saw_built():
    records = (RevisionRecord("r1", 1, T0), RevisionRecord("r2", 1, T0))
    state = RolloutState(stable="r1", candidate="r2", revisions=records)
    v2 = {"model": {"uri": "s3://m/2"}, "serving": {"port": 8080}}
    first = status_from_state(state, RolloutSpec(target_revision="r2"), None, True, T0, template=v2)
    templates = {r["revision"]: r.get("template") for r in first["revisions"]}
    assert templates == {"r1": None, "r2": v2}  # only the revision being built is known

    # later passes (even one whose spec asks for r1 again) keep what r2 was
    previous = ModelDeploymentStatus.model_validate(first)
    v1 = {"model": {"uri": "s3://m/1"}, "serving": {"port": 8080}}
    later = status_from_state(state, RolloutSpec(target_revision="r1"), previous, True, T0, template=v1)
    assert {r["revision"]: r.get("template") for r in later["revisions"]} == {"r1": v1, "r2": v2}
