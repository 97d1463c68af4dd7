"""Schemathesis run of the Open Inference Protocol REST spec against a real server process.

The spec writes its path parameters as ``${MODEL_NAME}`` (a literal ``$`` before the template); the
test drops the ``$`` and pins the parameters to the served model and version, so that generated
requests reach the model (the unpinned variant would only exercise the 404 path).
"""

from __future__ import annotations

import copy

import pytest
import schemathesis
import yaml
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
)

from support import SPECS_DIR

pytestmark = pytest.mark.integration

SPEC = SPECS_DIR / "open_inference_rest.yaml"

CHECKS = [not_a_server_error, response_schema_conformance, content_type_conformance, negative_data_rejection]


def pinned_spec(model: str, version: str) -> dict:
    raw = yaml.safe_load(SPEC.read_text())
    spec = copy.deepcopy(raw)
    spec["paths"] = {path.replace("${", "{"): item for path, item in raw["paths"].items()}
    for item in spec["paths"].values():
        for param in item.get("parameters", []):
            if param["name"] == "MODEL_NAME":
                param["schema"] = {"type": "string", "enum": [model]}
            elif param["name"] == "MODEL_VERSION":
                param["schema"] = {"type": "string", "enum": [version]}
    return spec


schema = schemathesis.openapi.from_dict(pinned_spec("iris", "1"))


@schema.parametrize()
@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
def test_open_inference_protocol_conformance(case, onnx_server):
    case.call_and_validate(base_url=onnx_server.url, checks=CHECKS)
