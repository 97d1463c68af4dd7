"""Schema validation of built objects: Kubernetes built-ins strictly, Gateway API from its CRD."""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml

from support import SPECS_DIR

K8S_VERSION = "1.32.0"
GATEWAY_SPECS = Path(os.environ.get("MLROLLOUTS_GATEWAY_SPECS", str(SPECS_DIR / "gateway-api-v1.6.1")))


def validate_builtin(obj: dict[str, Any]) -> None:
    try:
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        # the library's message embeds the whole schema; keep the verdict and the failing path
        path = "/".join(str(p) for p in exc.absolute_path)
        raise AssertionError(f"{obj['kind']} {obj['metadata']['name']}: {path}: {exc.message}") from None


@functools.cache
def _crd_schema(filename: str, version: str) -> dict[str, Any]:
    crd = yaml.safe_load((GATEWAY_SPECS / filename).read_text())
    for v in crd["spec"]["versions"]:
        if v["name"] == version:
            return v["schema"]["openAPIV3Schema"]
    raise KeyError(version)


def validate_http_route(obj: dict[str, Any]) -> None:
    assert obj["apiVersion"] == "gateway.networking.k8s.io/v1"
    jsonschema.validate(obj, _crd_schema("httproutes.yaml", "v1"))
