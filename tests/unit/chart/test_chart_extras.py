"""The operator's readiness probe and the release's extra objects."""

from __future__ import annotations

import helm_python
import pytest
from chart_render import NAMESPACE, render


def test_operator_is_ready_only_when_its_health_endpoint_answers():
    container = render({"readinessProbe": {"periodSeconds": 7}}).container
    probe = container["readinessProbe"]
    assert probe["httpGet"] == {"path": "/healthz", "port": "health"}
    assert probe["periodSeconds"] == 7
    assert "health" in {port["name"] for port in container["ports"]}


def test_extra_objects_are_rendered_with_the_release_values():
    as_map = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "{{ .Release.Name }}-extra", "namespace": "{{ .Release.Namespace }}"},
        "data": {"replicas": "{{ .Values.replicaCount }}"},
    }
    as_text = (
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: {{ .Release.Name }}-token\nstringData:\n  a: b\n"
    )
    rendered = render({"extraObjects": [as_map, as_text], "replicaCount": 2})
    config_map = rendered.one("ConfigMap", "mlr-extra")
    assert config_map["metadata"]["namespace"] == NAMESPACE
    assert config_map["data"] == {"replicas": "2"}
    assert rendered.one("Secret", "mlr-token")["stringData"] == {"a": "b"}


def test_no_extra_objects_by_default():
    assert "mlrollouts/templates/extra-objects.yaml" not in {
        path for path, text in render().manifests.items() if text.strip()
    }


def test_an_extra_object_must_be_a_manifest():
    with pytest.raises(helm_python.HelmError, match="extraObjects"):
        render({"extraObjects": [42]})
