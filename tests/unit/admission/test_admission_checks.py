"""What the webhook refuses and warns of, per kind (the same functions the handlers call)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from mlrollouts.controller.admission import (
    WebhookSettings,
    missing_reference_warning,
    references,
    structural_problems,
)
from mlrollouts.controller.config import OperatorConfig
from mlrollouts.local.apiserver.patching import Yaml12Loader

MANIFESTS = Path(__file__).parents[2] / "manifests"
REFUSED = sorted((MANIFESTS / "webhook").glob("*.yaml")) + sorted(
    (MANIFESTS / "operator-only").glob("*.yaml")
)
VALID = sorted((MANIFESTS / "valid").glob("*.yaml"))


def load(path: Path) -> tuple[dict, str]:
    text = path.read_text()
    expect = next(line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("# expect:"))
    # YAML 1.2, as the API server reads it (so 1e-07 is a number)
    return yaml.load(text, Loader=Yaml12Loader), expect


def problems_of(document: dict, config: OperatorConfig | None = None) -> list[str]:
    meta = document["metadata"]
    return structural_problems(
        document["kind"], meta["name"], "default", document["spec"], config or OperatorConfig()
    )


@pytest.mark.parametrize("path", REFUSED, ids=lambda p: p.name)
def test_refused_sample_is_refused_naming_the_field(path):
    document, expect = load(path)
    problems = problems_of(document)
    assert any(expect in p for p in problems), f"expected {expect!r} in {problems}"


@pytest.mark.parametrize("path", VALID, ids=lambda p: p.name)
def test_valid_sample_passes(path):
    document = yaml.load(path.read_text(), Loader=Yaml12Loader)
    assert problems_of(document) == []


def test_allowing_private_hosts_admits_the_uri_samples():
    document, _ = load(MANIFESTS / "webhook/mdep-uri-aws-metadata.yaml")
    assert problems_of(document, OperatorConfig(allow_private_model_hosts=True)) == []


def test_a_component_with_the_composites_own_name_is_refused():
    document = yaml.safe_load((MANIFESTS / "valid/compositemodel-sequence.yaml").read_text())
    document["metadata"]["name"] = "clf-tree"
    assert problems_of(document) == [
        "spec.nodes[3].modelDeployment: ModelDeployment/clf-tree has this CompositeModel's own name; "
        "their entry points would both be Service 'clf-tree' (rename one of them)"
    ]


def test_references_name_the_field_of_each_component_and_variant():
    composite = yaml.safe_load((MANIFESTS / "valid/compositemodel-sequence.yaml").read_text())
    refs = references("CompositeModel", composite["spec"])
    assert refs[0] == ("spec.nodes[1].modelDeployment", "ModelDeployment", "feature-transformer")
    assert [name for _, _, name in refs] == ["feature-transformer", "clf-tree", "clf-forest", "clf-linear"]
    experiment = {
        "variants": [{"name": "a", "modelDeployment": "m-a"}, {"name": "b", "modelDeployment": "m-b"}]
    }
    assert references("Experiment", experiment) == [
        ("spec.variants[0].modelDeployment", "ModelDeployment", "m-a"),
        ("spec.variants[1].modelDeployment", "ModelDeployment", "m-b"),
    ]
    assert references("ModelDeployment", {"model": {"uri": "file:///m.onnx"}}) == []


def test_missing_reference_warning_says_what_to_do():
    warning = missing_reference_warning("spec.variants[1].modelDeployment", "ModelDeployment", "m-b", "prod")
    assert warning.startswith("spec.variants[1].modelDeployment: ModelDeployment 'm-b' does not exist")
    assert "namespace 'prod'" in warning


def test_webhook_settings_come_from_the_environment():
    assert not WebhookSettings.from_environment({}).enabled
    settings = WebhookSettings.from_environment(
        {"MLROLLOUTS_WEBHOOK_PORT": "9443", "MLROLLOUTS_WEBHOOK_SERVICE": "ops/mlrollouts-webhook:443"}
    )
    assert (settings.port, settings.service, settings.addr) == (9443, "ops/mlrollouts-webhook:443", "0.0.0.0")
    with pytest.raises(ValueError, match="MLROLLOUTS_WEBHOOK_PORT: 'https' is not a port number"):
        WebhookSettings.from_environment({"MLROLLOUTS_WEBHOOK_PORT": "https"})
