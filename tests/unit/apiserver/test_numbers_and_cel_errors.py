"""Numbers as the API server decodes them, and CEL rules that read a missing field."""

from __future__ import annotations

import pytest

from mlrollouts.local.apiserver.patching import load_body
from mlrollouts.local.apiserver.schema import prune_and_default, validate

SCHEMA = {
    "type": "object",
    "properties": {
        "spec": {
            "type": "object",
            "required": ["variants"],
            "x-kubernetes-validations": [
                {"rule": "self.variants.size() >= 2", "message": "at least two variants"},
                {"rule": "self.policy.floor < 50", "message": "floor below 50"},
            ],
            "properties": {
                "seed": {"type": "integer"},
                "ratio": {"type": "number"},
                "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                "variants": {"type": "array", "items": {"type": "string"}},
                "policy": {"type": "object", "properties": {"floor": {"type": "integer"}}},
            },
        }
    },
}
VALID_SPEC = {"variants": ["a", "b"], "policy": {"floor": 1}}


def errors_of(spec):
    pruned, _ = prune_and_default({"spec": spec}, SCHEMA)
    return [err.text() for err in validate(pruned, SCHEMA)], pruned


@pytest.mark.parametrize("seed", [2**63, 2**64, -(2**63) - 1, 1e23, 2.0**53 + 2])
def test_integer_beyond_int64_or_inexact_is_a_type_error_naming_the_field(seed):
    texts, _ = errors_of({**VALID_SPEC, "seed": seed})
    assert texts == [
        'spec.seed: Invalid value: "number": spec.seed in body must be of type integer: "number"'
    ]


@pytest.mark.parametrize("seed", [2**63 - 1, -(2**63), 2**53])
def test_integer_within_int64_is_stored_as_an_integer(seed):
    texts, pruned = errors_of({**VALID_SPEC, "seed": seed})
    assert texts == []
    assert pruned["spec"]["seed"] == seed and isinstance(pruned["spec"]["seed"], int)


def test_integral_float_in_an_integer_field_is_stored_as_an_integer():
    texts, pruned = errors_of({**VALID_SPEC, "seed": 2.0})
    assert texts == [] and pruned["spec"]["seed"] == 2 and isinstance(pruned["spec"]["seed"], int)


def test_huge_integer_in_a_free_form_field_is_kept_as_a_number_and_rules_still_run():
    texts, pruned = errors_of({"variants": ["a"], "policy": {"floor": 1}, "free": {"n": 2**70}})
    assert texts == ['spec: Invalid value: "object": at least two variants']
    assert pruned["spec"]["free"]["n"] == float(2**70)


def test_a_missing_field_a_rule_reads_is_reported_once_as_required():
    texts, _ = errors_of({"policy": {"floor": 1}})
    assert texts == ["spec.variants: Required value"]


def test_a_missing_nested_field_a_rule_reads_is_named_with_its_path():
    texts, _ = errors_of({"variants": ["a", "b"], "policy": {}})
    assert texts == ["spec.policy.floor: Required value"]
    assert not any("<class" in text or "KeyError" in text for text in texts)


def test_apply_body_is_json_or_yaml_1_2():
    assert load_body(b'{"max": 1e-07, "seed": 9223372036854775808}') == {"max": 1e-07, "seed": 2**63}
    assert load_body("max: 1e-07\nflag: yes\non: off\nmode: 010\nday: 2024-01-01\nhex: 0x1f\nnone: ~\n") == {
        "max": 1e-07,
        "flag": "yes",
        "on": "off",
        "mode": 10,
        "day": "2024-01-01",
        "hex": 31,
        "none": None,
    }
    assert load_body("a: true\nb: False\nc: .inf\nd: -2.5e+3\n") == {
        "a": True,
        "b": False,
        "c": float("inf"),
        "d": -2500.0,
    }
