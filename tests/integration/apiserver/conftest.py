from __future__ import annotations

import copy

import httpx
import pytest

from mlrollouts.local.apiserver.testing import apiserver, kubeconfig  # noqa: F401

pytestmark = pytest.mark.integration


@pytest.fixture
def http(apiserver):  # noqa: F811
    # plain HTTP: skip loading the CA bundle, which costs ~0.3 s per client
    with httpx.Client(base_url=apiserver.url, timeout=10, verify=False) as client:
        yield client


WIDGET_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "widgets.example.com"},
    "spec": {
        "group": "example.com",
        "scope": "Namespaced",
        "names": {
            "plural": "widgets",
            "singular": "widget",
            "kind": "Widget",
            "shortNames": ["wdg"],
            "categories": ["things"],
        },
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "subresources": {"status": {}},
                "additionalPrinterColumns": [
                    {"name": "Size", "type": "integer", "jsonPath": ".spec.size"},
                    {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
                    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
                ],
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "spec": {
                                "type": "object",
                                "required": ["size"],
                                "x-kubernetes-validations": [
                                    {
                                        "rule": "self.size <= 10 || self.big",
                                        "message": "size above 10 needs big",
                                    }
                                ],
                                "properties": {
                                    "size": {"type": "integer", "minimum": 0, "maximum": 100},
                                    "big": {"type": "boolean", "default": False},
                                    "color": {"type": "string", "enum": ["red", "blue"]},
                                    "tags": {"type": "array", "maxItems": 2, "items": {"type": "string"}},
                                    "steps": {
                                        "type": "array",
                                        "items": {
                                            "type": "object",
                                            "properties": {"weight": {"type": "integer", "maximum": 100}},
                                        },
                                        "x-kubernetes-validations": [
                                            {
                                                "rule": "self.map(s, s.weight).isSorted()",
                                                "message": "step weights must increase",
                                            }
                                        ],
                                    },
                                    "immutable": {
                                        "type": "string",
                                        "x-kubernetes-validations": [
                                            {"rule": "self == oldSelf", "message": "immutable is immutable"}
                                        ],
                                    },
                                },
                            },
                            "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                        },
                    }
                },
            }
        ],
    },
}

WIDGETS = "/apis/example.com/v1/namespaces/default/widgets"


@pytest.fixture
def widget_crd_body():
    """A CRD of our own (example.com/v1 Widget) with a schema, CEL rules, status and printer columns."""
    return copy.deepcopy(WIDGET_CRD)


@pytest.fixture
def widget_crd(http):
    response = http.post("/apis/apiextensions.k8s.io/v1/customresourcedefinitions", json=WIDGET_CRD)
    assert response.status_code == 201, response.text
    return response.json()


def _widget(name: str, **spec) -> dict:
    return {
        "apiVersion": "example.com/v1",
        "kind": "Widget",
        "metadata": {"name": name},
        "spec": {"size": 1, **spec},
    }


@pytest.fixture
def make_widget():
    return _widget
