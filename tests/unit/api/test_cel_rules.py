"""The CRDs' own rules (OpenAPI schema + CEL `x-kubernetes-validations`, evaluated with cel-python)
reject the invalid samples and accept the valid ones, so the API server refuses a bad spec even
when the operator is down."""

from __future__ import annotations

from functools import cache

import api_samples as manifests
import celpy
import pytest
from api_server_checks import K8S_FUNCTIONS, crd_schemas, server_side_errors, walk_rules


@pytest.mark.parametrize("sample", manifests.valid(), ids=lambda s: s.id)
def test_valid_sample_passes_every_rule(sample):
    assert server_side_errors(sample.document) == []


@pytest.mark.parametrize("sample", manifests.invalid(), ids=lambda s: s.id)
def test_invalid_sample_is_rejected_by_the_crd(sample):
    problems = server_side_errors(sample.document)
    assert any(sample.server in problem for problem in problems), (
        f"expected {sample.server!r} among the API server's rejections: {problems}"
    )


@pytest.mark.parametrize("sample", manifests.operator_only(), ids=lambda s: s.id)
def test_operator_only_sample_passes_the_crd(sample):
    """These rules need more than CEL can say (e.g. cycles in a graph): the models catch them."""
    assert sample.server == "none"
    assert server_side_errors(sample.document) == []


def all_rules():
    return [
        pytest.param(rule, id=f"{kind}:{path}:{rule['message'][:40]}")
        for kind, schema in crd_schemas().items()
        for path, rule in walk_rules(schema)
    ]


@cache
def invalid_rejections() -> dict[str, list[str]]:
    return {s.id: server_side_errors(s.document) for s in manifests.invalid()}


@pytest.mark.parametrize("rule", all_rules())
def test_every_rule_compiles_and_is_exercised(rule):
    env = celpy.Environment()
    env.program(env.compile(rule["rule"]), functions=K8S_FUNCTIONS)
    rejected_by = [
        name for name, problems in invalid_rejections().items() if any(rule["message"] in p for p in problems)
    ]
    assert rejected_by, f"no invalid sample triggers the rule {rule['rule']!r}"


def test_rules_use_only_portable_cel():
    """Kubernetes CEL only: `self`, standard macros, and the Kubernetes list library."""
    for schema in crd_schemas().values():
        for _, rule in walk_rules(schema):
            assert "oldSelf" not in rule["rule"]
            assert set(rule) == {"rule", "message"}, "fieldPath/reason need Kubernetes 1.28+"
