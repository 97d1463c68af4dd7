"""The model URI policy: no loopback, link-local or cloud metadata hosts unless allowed."""

from __future__ import annotations

import pytest

from mlrollouts.controller.config import OperatorConfig
from mlrollouts.core.uri_policy import env_allows_private_hosts, model_uri_refusal, parse_address


@pytest.mark.parametrize(
    ("uri", "reason"),
    [
        ("http://127.0.0.1/m.onnx", "a loopback address"),
        ("http://127.8.9.10:9000/m.onnx", "a loopback address"),
        ("https://[::1]/m.onnx", "a loopback address"),
        ("http://[::ffff:127.0.0.1]/m.onnx", "a loopback address"),
        ("http://0x7f.1/m.onnx", "a loopback address"),
        ("http://2130706433/m.onnx", "a loopback address"),
        ("http://LOCALHOST./m.onnx", "a loopback address"),
        ("http://api.localhost/m.onnx", "a loopback address"),
        ("http://0.0.0.0:8080/m.onnx", "an unspecified address"),
        ("http://169.254.169.254/latest/meta-data/", "a cloud instance metadata service"),
        ("http://[fd00:ec2::254]/latest/", "a cloud instance metadata service"),
        ("http://100.100.100.200/latest/", "a cloud instance metadata service"),
        ("http://metadata.google.internal/computeMetadata/v1/", "a cloud instance metadata service"),
        ("https://user:pw@Metadata.Google.Internal:443/x", "a cloud instance metadata service"),
        ("http://169.254.3.4/m.onnx", "a link-local address"),
        ("http://[fe80::1]/m.onnx", "a link-local address"),
    ],
)
def test_private_hosts_are_refused_naming_the_field_and_the_setting(uri, reason):
    refusal = model_uri_refusal(uri, "spec.model.uri")
    assert refusal is not None and refusal.startswith("spec.model.uri: host ")
    assert f"is {reason}" in refusal
    assert "MLROLLOUTS_ALLOW_PRIVATE_MODEL_HOSTS=true" in refusal


@pytest.mark.parametrize(
    "uri",
    [
        "https://models.example.com/m.onnx",
        "http://10.0.0.5/m.onnx",  # in-cluster model stores are private but not the pod itself
        "http://minio.storage.svc:9000/m.onnx",
        "http://12.34.56.78/m.onnx",
        "s3://bucket/127.0.0.1/m.onnx",
        "file:///models/localhost/m.onnx",
    ],
)
def test_other_sources_are_allowed(uri):
    assert model_uri_refusal(uri, "spec.model.uri") is None


def test_the_operator_can_allow_private_hosts():
    uri = "http://127.0.0.1:8000/m.onnx"
    assert OperatorConfig(allow_private_model_hosts=False).model_uri_refusal(uri, "spec.model.uri")
    assert OperatorConfig(allow_private_model_hosts=True).model_uri_refusal(uri, "spec.model.uri") is None


def test_the_environment_variable_is_read_as_a_boolean(monkeypatch):
    assert [env_allows_private_hosts(v) for v in ("true", "1", "YES", "false", "", None)] == [
        True,
        True,
        True,
        False,
        False,
        False,
    ]
    monkeypatch.setenv("MLROLLOUTS_ALLOW_PRIVATE_MODEL_HOSTS", "true")
    assert OperatorConfig().allow_private_model_hosts is True


def test_host_names_are_not_mistaken_for_addresses():
    assert parse_address("deadbeef.example") is None
    assert parse_address("1e100.net") is None
    assert str(parse_address("127.1")) == "127.0.0.1"
