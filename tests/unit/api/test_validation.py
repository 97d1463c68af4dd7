"""The models reject every invalid sample with a message that names the field."""

from __future__ import annotations

import copy
import re

import api_samples as manifests
import pytest
from api_server_checks import apply_defaults, crd_schemas
from pydantic import ValidationError

from mlrollouts.api import format_validation_error, parse_resource

INVALID = manifests.invalid() + manifests.operator_only()


def test_there_are_enough_invalid_samples():
    assert len(manifests.invalid()) >= 15
    for sample in INVALID:
        assert sample.expect, f"{sample.id}: missing '# expect:' comment"
        assert sample.server, f"{sample.id}: missing '# server:' comment"


@pytest.mark.parametrize("sample", INVALID, ids=lambda s: s.id)
def test_invalid_sample_is_rejected_naming_the_field(sample):
    with pytest.raises(ValueError) as exc:  # a ValidationError, or a wrong apiVersion or kind
        parse_resource(sample.document)
    error = exc.value
    message = format_validation_error(error) if isinstance(error, ValidationError) else str(error)
    assert sample.expect in message, f"expected {sample.expect!r} in:\n{message}"


@pytest.mark.parametrize("sample", manifests.valid(), ids=lambda s: s.id)
def test_valid_sample_is_accepted(sample):
    resource = parse_resource(sample.document)
    assert resource.metadata.name == sample.document["metadata"]["name"]


def test_errors_report_every_problem_with_its_path():
    doc = manifests.load(manifests.MANIFESTS / "valid/modeldeployment-minimal.yaml").document
    doc["spec"]["serving"] = {"replicas": -1, "port": 70000}
    with pytest.raises(ValidationError) as exc:
        parse_resource(doc)
    lines = format_validation_error(exc.value).splitlines()
    assert any(line.startswith("spec.serving.replicas:") for line in lines)
    assert any(line.startswith("spec.serving.port:") for line in lines)


def test_unknown_query_variable_is_named():
    doc = manifests.load(manifests.MANIFESTS / "valid/modeldeployment-minimal.yaml").document
    doc["spec"]["rollout"] = {
        "analysis": {"checks": [{"name": "c", "query": "up{job='{{ name }}',x='{{ nmae }}'}", "max": 1}]}
    }
    with pytest.raises(ValidationError) as exc:
        parse_resource(doc)
    assert "'nmae'" in format_validation_error(exc.value)
    doc["spec"]["rollout"]["analysis"]["checks"][0]["query"] = "up{job='{{name}}'} / {{ stable_revision }}"
    assert parse_resource(doc)


YAML11_BOOLEAN = re.compile(r"(?:^|[\[\s,:])(y|Y|n|N|yes|no|on|off)\s*(?:[,\]}]|$)", re.MULTILINE)


@pytest.mark.parametrize("sample", manifests.valid() + INVALID, ids=lambda s: s.id)
def test_sample_reads_the_same_in_yaml_1_1(sample):
    """kubectl reads YAML 1.1, where a plain `y`, `n`, `on`, `off` is a boolean."""
    body = "\n".join(line for line in sample.path.read_text().splitlines() if not line.startswith("#"))
    assert not YAML11_BOOLEAN.search(body)


@pytest.mark.parametrize("sample", manifests.valid(), ids=lambda s: s.id)
def test_server_defaults_agree_with_model_defaults(sample):
    """What the API server stores (defaults applied from the CRD) reads back as the same object."""
    schema = crd_schemas()[sample.document["kind"]]
    defaulted = apply_defaults(schema, copy.deepcopy(sample.document))
    assert defaulted != sample.document, "the CRD sets some defaults"
    assert parse_resource(defaulted) == parse_resource(sample.document)


def test_server_defaults_fill_nested_objects():
    doc = manifests.load(manifests.MANIFESTS / "valid/modeldeployment-minimal.yaml").document
    defaulted = apply_defaults(crd_schemas()["ModelDeployment"], copy.deepcopy(doc))
    assert defaulted["spec"]["rollout"]["strategy"] == "Canary"
    assert defaulted["spec"]["traffic"]["router"]["replicas"] == 1
    assert defaulted["spec"]["serving"]["port"] == 8080
