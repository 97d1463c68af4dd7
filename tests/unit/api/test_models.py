"""The API models: defaults, camelCase wire form, examples, helpers."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from mlrollouts.api import (
    Experiment,
    ModelDeployment,
    ModelDeploymentStatus,
    Phase,
    PolicyType,
    RevisionWeight,
    Strategy,
    TrafficProvider,
    format_validation_error,
    parse_resource,
    to_json,
)
from mlrollouts.local.apiserver.patching import Yaml12Loader

ROOT = Path(__file__).resolve().parents[3]
EXAMPLES = [
    ROOT / "examples/canary/modeldeployment.yaml",
    ROOT / "examples/ab-bandit/experiment.yaml",
    ROOT / "examples/composite/compositemodel.yaml",
    ROOT / "examples/online-learning/modeldeployment.yaml",
    ROOT / "examples/online-learning/static.yaml",
]
VALID = sorted((ROOT / "tests/manifests/valid").glob("*.yaml"))


def minimal_mdep(**spec):
    return {
        "apiVersion": "mlrollouts.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "m", "namespace": "default"},
        "spec": {"model": {"uri": "file:///m.onnx"}, **spec},
    }


@pytest.mark.parametrize("path", EXAMPLES + VALID, ids=lambda p: str(p.relative_to(ROOT)))
def test_valid_manifests_parse_and_round_trip(path):
    for doc in yaml.load_all(path.read_text(), Loader=Yaml12Loader):
        resource = parse_resource(doc)
        again = parse_resource(to_json(resource))
        assert again == resource


def test_defaults():
    md = ModelDeployment.model_validate(minimal_mdep())
    assert md.spec.traffic.provider is TrafficProvider.ROUTER
    assert md.spec.rollout.strategy is Strategy.CANARY
    assert md.spec.serving.port == 8080
    assert md.spec.model.allow_unsafe_pickle is False
    assert md.served_model_name == "m"
    assert md.status is None


def test_wire_form_is_camel_case_and_gateway_api_spelled_out():
    md = ModelDeployment.model_validate(
        minimal_mdep(traffic={"provider": "GatewayAPI", "gatewayAPI": {"parentRefs": [{"name": "gw"}]}})
    )
    wire = to_json(md)
    assert wire["spec"]["traffic"]["gatewayAPI"]["parentRefs"][0]["name"] == "gw"
    assert wire["spec"]["model"]["allowUnsafePickle"] is False
    assert "revisionHistoryLimit" in wire["spec"]["rollout"]


def test_unknown_spec_field_is_rejected_with_its_path():
    with pytest.raises(ValidationError) as exc:
        ModelDeployment.model_validate(minimal_mdep(rollout={"stepz": []}))
    assert "spec.rollout.stepz" in format_validation_error(exc.value)


def test_status_round_trip_with_timestamps():
    status = ModelDeploymentStatus.model_validate(
        {
            "phase": "Progressing",
            "stableRevision": "abc123",
            "candidateRevision": "def456",
            "currentStep": 1,
            "stepStartedAt": "2026-01-01T00:00:00Z",
            "weights": [
                {"revision": "abc123", "desired": 90},
                {"revision": "def456", "desired": 10, "verified": 10},
            ],
            "analysis": {
                "runs": [{"time": "2026-01-01T00:00:30Z", "check": "errors", "verdict": "Pass", "value": 0.0}]
            },
            "kopf": {"progress": {}},
        }
    )
    assert status.phase is Phase.PROGRESSING
    assert status.weights[1] == RevisionWeight(revision="def456", desired=10, verified=10)
    wire = to_json(status)
    assert wire["stepStartedAt"] == "2026-01-01T00:00:00Z"
    assert wire["analysis"]["runs"][0]["verdict"] == "Pass"
    assert "kopf" not in wire


def test_experiment_default_policy_is_fixed():
    exp = Experiment.model_validate(
        {
            "apiVersion": "mlrollouts.io/v1alpha1",
            "kind": "Experiment",
            "metadata": {"name": "e"},
            "spec": {
                "variants": [
                    {"name": "a", "modelDeployment": "a", "weight": 50},
                    {"name": "b", "modelDeployment": "b", "weight": 50},
                ]
            },
        }
    )
    assert exp.spec.policy.type is PolicyType.FIXED
    assert exp.spec.floor_of(exp.spec.variants[0]) == 0


def test_parse_resource_rejects_unknown_kind_and_version():
    with pytest.raises(ValueError, match="kind"):
        parse_resource({"apiVersion": "mlrollouts.io/v1alpha1", "kind": "Nope"})
    with pytest.raises(ValueError, match="apiVersion"):
        parse_resource({"apiVersion": "v1", "kind": "ModelDeployment"})
