"""Small controller pieces that need no API server: merge patches, CLI flags, settings, registry."""

from __future__ import annotations

import kopf
import pytest

from mlrollouts.cli.main import main
from mlrollouts.controller.handlers import registry, settings
from mlrollouts.controller.kube import merge_patch_for, resource_path


def test_merge_patch_removes_vanished_keys_and_keeps_equal_ones():
    old = {"phase": "Progressing", "candidateRevision": "b", "analysis": {"runs": [1], "lastRunAt": "t"}}
    new = {"phase": "Healthy", "analysis": {"runs": [1, 2]}}
    assert merge_patch_for(old, new) == {
        "phase": "Healthy",
        "candidateRevision": None,
        "analysis": {"runs": [1, 2], "lastRunAt": None},
    }
    assert merge_patch_for(new, new) == {}


def test_resource_paths_for_core_and_grouped_kinds():
    assert resource_path("v1", "ConfigMap", "ml", "x") == "/api/v1/namespaces/ml/configmaps/x"
    assert resource_path("apps/v1", "Deployment", "ml") == "/apis/apps/v1/namespaces/ml/deployments"
    assert (
        resource_path("mlrollouts.io/v1alpha1", "ModelDeployment", "ml", "iris")
        == "/apis/mlrollouts.io/v1alpha1/namespaces/ml/modeldeployments/iris"
    )


def test_kopf_settings_use_our_prefix_and_peering():
    s = settings("mlrollouts", priority=5)
    assert s.persistence.finalizer == "mlrollouts.io/finalizer"
    assert s.persistence.progress_storage.prefix == "kopf.mlrollouts.io"
    # the action annotation must stay visible to the update handler (kopf hides its own prefix)
    marker = f"{s.persistence.diffbase_storage.prefix}/kopf-managed"  # what kopf writes on our objects
    annotations = {marker: "yes", "mlrollouts.io/action": "abort"}
    essence = s.persistence.diffbase_storage.build(body=kopf.Body({"metadata": {"annotations": annotations}}))
    assert essence["metadata"]["annotations"] == {"mlrollouts.io/action": "abort"}
    assert s.peering.name == "mlrollouts" and s.peering.priority == 5 and not s.peering.mandatory
    assert s.watching.server_timeout and s.watching.client_timeout > s.watching.server_timeout
    assert settings(None).peering.standalone is True


def test_registry_has_change_handlers_and_a_driver():
    reg = registry()
    spawned = list(reg._spawning.get_all_handlers())
    assert [h.id for h in spawned] == ["drive"]
    assert len(list(reg._changing.get_all_handlers())) >= 4  # resume, create, update, delete


@pytest.mark.parametrize("flag", ["--tick", "--poll"])
def test_operator_run_rejects_a_non_positive_period(flag):
    with pytest.raises(SystemExit, match=flag):
        main(["operator", "run", flag, "0"])
