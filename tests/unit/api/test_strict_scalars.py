"""The models read scalars as the API server does: no coercion from strings, 64-bit integers,
``null`` as a missing field."""

from __future__ import annotations

import copy

import pytest
from pydantic import ValidationError

from mlrollouts.api import format_validation_error, parse_resource

MODEL_DEPLOYMENT = {
    "apiVersion": "mlrollouts.io/v1alpha1",
    "kind": "ModelDeployment",
    "metadata": {"name": "m"},
    "spec": {"model": {"uri": "file:///models/m.onnx"}},
}


def with_spec(**spec):
    doc = copy.deepcopy(MODEL_DEPLOYMENT)
    doc["spec"].update(spec)
    return doc


def rejection(doc) -> str:
    with pytest.raises(ValidationError) as exc:
        parse_resource(doc)
    return format_validation_error(exc.value)


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"serving": {"replicas": "2"}}, "spec.serving.replicas: Input should be a valid integer"),
        ({"serving": {"replicas": True}}, "spec.serving.replicas: Input should be a valid integer"),
        ({"serving": {"replicas": 2.5}}, "spec.serving.replicas"),
        ({"rollout": {"analysis": {"minSamples": 1e23}}}, "spec.rollout.analysis.minSamples"),
        ({"rollout": {"analysis": {"minSamples": 2**64}}}, "spec.rollout.analysis.minSamples"),
        ({"model": {"uri": "file:///m.skops", "allowUnsafePickle": "true"}}, "spec.model.allowUnsafePickle"),
        ({"model": {"uri": "file:///m.skops", "allowUnsafePickle": 1}}, "spec.model.allowUnsafePickle"),
        ({"serving": {"resources": {"limits": {"cpu": 2**63}}}}, "spec.serving.resources.limits.cpu"),
    ],
)
def test_scalars_are_not_coerced(spec, field):
    assert field in rejection(with_spec(**spec))


def test_integral_float_reads_as_an_integer_as_the_api_server_stores_it():
    assert parse_resource(with_spec(serving={"replicas": 2.0})).spec.serving.replicas == 2


def test_null_reads_as_a_missing_field_and_a_missing_map_entry():
    resource = parse_resource(with_spec(serving={"replicas": None, "resources": {"limits": {"cpu": None}}}))
    assert resource.spec.serving.replicas == 1
    assert resource.spec.serving.resources.limits == {}
    assert "spec.model: Field required" in rejection(with_spec(model=None))


@pytest.mark.parametrize(
    ("name", "problem"),
    [("a" * 254, "at most 253 characters"), ("Fraud_X", "should match pattern"), (None, "Required value")],
)
def test_names_follow_the_api_servers_rules(name, problem):
    doc = copy.deepcopy(MODEL_DEPLOYMENT)
    doc["metadata"]["name"] = name
    assert problem in rejection(doc)


def test_a_dotted_name_of_253_characters_is_a_valid_name():
    doc = copy.deepcopy(MODEL_DEPLOYMENT)
    doc["metadata"]["name"] = ".".join(["a" * 63] * 4)[:253]
    assert parse_resource(doc).metadata.name == doc["metadata"]["name"]
