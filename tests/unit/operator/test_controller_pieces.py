"""Small controller pieces that need no API server: merge patches, CLI flags, settings, registry."""

from __future__ import annotations

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
    assert s.peering.name == "mlrollouts" and s.peering.priority == 5 and not s.peering.mandatory
    assert s.watching.server_timeout and s.watching.client_timeout > s.watching.server_timeout
    assert settings(None).peering.standalone is True


def test_registry_has_change_handlers_and_a_timer():
    reg = registry(tick=0.5)
    resource_handlers = list(reg._spawning.get_all_handlers())
    assert [h.interval for h in resource_handlers] == [0.5]
    assert len(list(reg._changing.get_all_handlers())) >= 4  # resume, create, update, delete


@pytest.mark.parametrize("flag", ["--tick", "--poll"])
def test_operator_run_rejects_a_non_positive_period(flag):
    with pytest.raises(SystemExit, match=flag):
        main(["operator", "run", flag, "0"])
