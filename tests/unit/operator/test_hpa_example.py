"""examples/canary/hpa.yaml targets the example ModelDeployment through a scale subresource that exists."""

from __future__ import annotations

from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from mlrollouts.api import MODEL_DEPLOYMENT, ModelDeployment
from mlrollouts.api.crd import crd

ROOT = Path(__file__).resolve().parents[3]


def test_hpa_example_scales_the_example_model_deployment():
    hpa = yaml.safe_load((ROOT / "examples/canary/hpa.yaml").read_text())
    md = ModelDeployment.model_validate(
        yaml.safe_load((ROOT / "examples/canary/modeldeployment.yaml").read_text())
    )
    assert (hpa["apiVersion"], hpa["kind"]) == ("autoscaling/v2", "HorizontalPodAutoscaler")
    target = hpa["spec"]["scaleTargetRef"]
    assert target == {
        "apiVersion": MODEL_DEPLOYMENT.api_version,
        "kind": "ModelDeployment",
        "name": md.metadata.name,
    }
    assert hpa["metadata"]["namespace"] == md.metadata.namespace
    (version,) = crd(MODEL_DEPLOYMENT)["spec"]["versions"]
    assert version["subresources"]["scale"]["specReplicasPath"] == ".spec.serving.replicas"
    assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    # a Utilization target is a share of the pods' requests: the serving pods must request the resource
    for metric in hpa["spec"]["metrics"]:
        assert metric["type"] == "Resource"
        assert metric["resource"]["name"] in md.spec.serving.resources.requests


@pytest.mark.parametrize("version", ["1.28", kubernetes_validate.utils.latest_version()])
def test_hpa_example_is_a_valid_autoscaling_v2_object(version):
    hpa = yaml.safe_load((ROOT / "examples/canary/hpa.yaml").read_text())
    kubernetes_validate.validate(hpa, version, strict=True)
