"""The pydantic models (the schema source) and the API server's CRD validation give the same verdict
on generated resources, and no generated resource makes the server answer 500."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from mlrollouts.api import KINDS, format_validation_error, parse_resource
from mlrollouts.local.apiserver import ApiServer
from mlrollouts.local.apiserver.patching import Yaml12Loader

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]
PLURALS = {kind.kind: kind.plural for kind in KINDS}
SEEDS = [
    document
    for path in sorted((ROOT / "tests/manifests/valid").glob("*.yaml"))
    + sorted((ROOT / "examples").glob("*/*.yaml"))
    for document in yaml.load_all(path.read_text(), Loader=Yaml12Loader)
    if isinstance(document, dict) and document.get("apiVersion") == "mlrollouts.io/v1alpha1"
]

FieldPath = tuple[str | int, ...]


def _leaves(value: Any, path: FieldPath = ()) -> list[FieldPath]:
    """Paths of the scalars (and empty containers) under ``value``."""
    if isinstance(value, dict) and value:
        return [leaf for key, item in value.items() for leaf in _leaves(item, (*path, key))]
    if isinstance(value, list) and value:
        return [leaf for index, item in enumerate(value) for leaf in _leaves(item, (*path, index))]
    return [path]


def _replaced(document: dict[str, Any], path: FieldPath, value: Any) -> dict[str, Any]:
    result = copy.deepcopy(document)
    parent: Any = result
    for key in path[:-1]:
        parent = parent[key]
    parent[path[-1]] = value
    return result


# what users get wrong: numbers beyond 64 bits, numbers as strings, YAML 1.1 words, long and odd names
TRICKY_VALUES = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([2**63 - 1, 2**63, 2**64, -(2**63) - 1, 2**53, 2**53 + 1]),
    st.floats(allow_nan=False, allow_infinity=False, width=64),
    st.sampled_from([1e-07, 1e23, 2.0, 0.5, -1.0]),
    st.booleans(),
    st.none(),
    st.sampled_from(["true", "yes", "on", "2", "1e-07", "", "a" * 254, "Fraud_X", "fraud.v2", "-a"]),
    st.sampled_from(["file:///m/../x.onnx", "ftp://h/m.onnx", "s3://bucket/m.onnx", "https://h/m.onnx"]),
    st.text(max_size=12),
    st.just([]),
    st.just({}),
)


def _plausible(document: dict[str, Any], path: FieldPath) -> st.SearchStrategy[Any]:
    """A value of the same JSON type as the one it replaces (so that many resources stay valid)."""
    current: Any = document
    for key in path:
        current = current.get(key) if isinstance(current, dict) else None
    if isinstance(current, bool):
        return st.booleans()
    if isinstance(current, int):
        return st.integers(min_value=min(current, max(0, current - 3)), max_value=current + 3)
    if isinstance(current, float):
        return st.floats(min_value=0, max_value=max(1.0, current * 2))
    return st.just(current)


@st.composite
def resources(draw: st.DrawFn) -> dict[str, Any]:
    document = draw(st.sampled_from(SEEDS))
    for _ in range(draw(st.integers(min_value=1, max_value=2))):
        targets = [("metadata", "name"), *(p for p in _leaves(document.get("spec", {}), ("spec",)))]
        target = draw(st.sampled_from(targets))
        document = _replaced(
            document,
            target,
            draw(st.one_of(TRICKY_VALUES, _plausible(document, target), _plausible(document, target))),
        )
    return document


@pytest.fixture(scope="module")
def server():
    with ApiServer(port=0) as api, httpx.Client(base_url=api.url, timeout=10, verify=False) as client:
        for path in sorted((ROOT / "crds").glob("*.yaml")):
            created = client.post(
                "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
                json=yaml.safe_load(path.read_text()),
            )
            assert created.status_code == 201, created.text
        yield client


def _server_verdict(client: httpx.Client, document: dict[str, Any]) -> tuple[bool, str]:
    plural = PLURALS[document["kind"]]
    answer = client.post(
        f"/apis/mlrollouts.io/v1alpha1/namespaces/default/{plural}",
        params={"dryRun": "All"},
        json={**document, "metadata": {**document["metadata"], "namespace": "default"}},
    )
    assert answer.status_code < 500, answer.text
    return answer.status_code == 201, answer.json().get("message", "")


def _model_verdict(document: dict[str, Any]) -> tuple[bool, str]:
    try:
        parse_resource(document)
    except ValidationError as exc:
        return False, format_validation_error(exc)
    return True, ""


def test_there_are_seeds_of_every_kind():
    assert {d["kind"] for d in SEEDS} == set(PLURALS)


@settings(max_examples=150, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(document=resources())
def test_models_and_server_agree(server, document):
    accepted_by_server, server_says = _server_verdict(server, document)
    accepted_by_models, models_say = _model_verdict(document)
    event("accepted" if accepted_by_server else "rejected")
    assert accepted_by_server == accepted_by_models, (
        f"server: {server_says or 'accepted'}\nmodels: {models_say or 'accepted'}"
    )
