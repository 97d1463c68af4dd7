"""Small controller pieces that need no API server: merge patches, CLI flags, settings, registry."""

from __future__ import annotations

import kopf
import pytest

from mlrollouts.api import ModelDeployment
from mlrollouts.cli.main import main
from mlrollouts.cli.operator import operator_config, parse_run_args
from mlrollouts.controller.config import OperatorConfig, parse_image_patterns
from mlrollouts.controller.modeldeployment import ModelDeploymentController, disallowed_image
from mlrollouts.controller.operator import registry, settings


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


def test_registry_has_change_handlers_and_a_driver_per_kind():
    reg = registry([ModelDeploymentController()])
    spawned = list(reg._spawning.get_all_handlers())
    assert [h.id for h in spawned] == ["drive"]
    assert len(list(reg._changing.get_all_handlers())) >= 4  # resume, create, update, delete
    every_kind = registry()
    plurals = sorted(h.selector.any_name for h in every_kind._spawning.get_all_handlers())
    assert plurals == ["compositemodels", "experiments", "modeldeployments"]


@pytest.mark.parametrize("flag", ["--tick", "--poll"])
def test_operator_run_rejects_a_non_positive_period(flag):
    with pytest.raises(SystemExit, match=flag):
        main(["operator", "run", flag, "0"])


def test_namespaced_operator_does_not_scan_the_cluster():
    assert settings(None, namespaced=True).scanning.disabled is True
    assert settings(None).scanning.disabled is False


def test_operator_run_flags_default_to_the_chart_environment(monkeypatch):
    monkeypatch.setenv("MLROLLOUTS_PROMETHEUS_TIMEOUT", "2500ms")
    monkeypatch.setenv("MLROLLOUTS_ALLOWED_IMAGES", "mlrollouts/serving:*, registry.example.com/models/*")
    monkeypatch.setenv("MLROLLOUTS_LOG_LEVEL", "debug")
    monkeypatch.setenv("MLROLLOUTS_LOG_FORMAT", "JSON")
    args = parse_run_args([])
    config = operator_config(args)
    assert config.prometheus_timeout == 2.5
    assert config.allowed_images == ("mlrollouts/serving:*", "registry.example.com/models/*")
    assert (args.log_level, args.log_format) == ("DEBUG", "json")
    # flags win over the environment
    args = parse_run_args(["--prometheus-timeout", "30s", "--allowed-images", "", "--log-format", "text"])
    config = operator_config(args)
    assert config.prometheus_timeout == 30.0 and config.allowed_images == ()
    assert args.log_format == "text"


@pytest.mark.parametrize(
    ("variable", "value", "named"),
    [
        ("MLROLLOUTS_PROMETHEUS_TIMEOUT", "ten seconds", "--prometheus-timeout"),
        ("MLROLLOUTS_PROMETHEUS_TIMEOUT", "0s", "--prometheus-timeout"),
        ("MLROLLOUTS_LOG_LEVEL", "chatty", "--log-level"),
        ("MLROLLOUTS_LOG_FORMAT", "xml", "--log-format"),
    ],
)
def test_bad_settings_from_the_environment_name_flag_and_variable(monkeypatch, variable, value, named):
    monkeypatch.setenv(variable, value)
    with pytest.raises(SystemExit, match=f"{named} \\(env {variable}\\)"):
        operator_config(parse_run_args([]))


def test_allowed_images_match_patterns_and_always_the_default_image():
    config = OperatorConfig(
        serving_image="mlrollouts/serving:0.1.0",
        allowed_images=parse_image_patterns("registry.example.com/models/*,mlrollouts/serving@sha256:*"),
    )
    assert config.image_allowed("mlrollouts/serving:0.1.0")
    assert config.image_allowed("registry.example.com/models/fraud:3")
    assert config.image_allowed("mlrollouts/serving@sha256:" + "a" * 64)
    assert not config.image_allowed("mlrollouts/serving:0.2.0")
    assert not config.image_allowed("evil.example.com/registry.example.com/models/x")
    assert OperatorConfig().image_allowed("anything/at:all")  # no list: every image


def _md(serving_image=None, router_image=None, provider="Router"):
    return ModelDeployment.model_validate(
        {
            "apiVersion": "mlrollouts.io/v1alpha1",
            "kind": "ModelDeployment",
            "metadata": {"name": "iris", "namespace": "ml"},
            "spec": {
                "model": {"uri": "s3://m/iris/1/model.onnx"},
                "serving": {"image": serving_image} if serving_image else {},
                "traffic": {"provider": provider, "router": {"image": router_image} if router_image else {}},
            },
        }
    )


def test_a_disallowed_image_is_refused_naming_field_and_image():
    config = OperatorConfig(allowed_images=("registry.example.com/*",))
    assert disallowed_image(_md(), "Router", config) is None
    assert disallowed_image(_md("registry.example.com/serving:2"), "Router", config) is None
    message = disallowed_image(_md("docker.io/someone/serving:latest"), "Router", config)
    assert message is not None
    assert message.startswith("spec.serving.image: image 'docker.io/someone/serving:latest' is not allowed")
    assert "registry.example.com/*" in message
    message = disallowed_image(_md(router_image="docker.io/r:1"), "Router", config)
    assert message is not None and message.startswith("spec.traffic.router.image: image 'docker.io/r:1'")
    # the router image matters only when the router carries the traffic
    assert disallowed_image(_md(router_image="docker.io/r:1", provider="Service"), "Service", config) is None
