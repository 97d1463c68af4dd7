from __future__ import annotations

import pytest

from mlrollouts.local.apiserver.schema import CelCompileError, compile_rule, prune_and_default, validate

SCHEMA = {
    "type": "object",
    "properties": {
        "spec": {
            "type": "object",
            "required": ["name"],
            "properties": {
                "name": {"type": "string", "minLength": 1, "maxLength": 5, "pattern": "^[a-z]+$"},
                "replicas": {"type": "integer", "default": 1, "minimum": 0},
                "ratio": {"type": "number", "exclusiveMaximum": True, "maximum": 1},
                "port": {"x-kubernetes-int-or-string": True},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                "nullable": {"type": "string", "nullable": True},
                "items": {
                    "type": "array",
                    "x-kubernetes-list-type": "map",
                    "x-kubernetes-list-map-keys": ["name"],
                    "items": {
                        "type": "object",
                        "properties": {"name": {"type": "string"}, "w": {"type": "integer", "default": 5}},
                    },
                },
                "set": {"type": "array", "x-kubernetes-list-type": "set", "items": {"type": "string"}},
                "either": {
                    "type": "object",
                    "properties": {"a": {"type": "string"}, "b": {"type": "string"}},
                    "x-kubernetes-validations": [
                        {
                            "rule": "has(self.a) != has(self.b)",
                            "message": "set exactly one of a and b",
                            "reason": "FieldValueForbidden",
                        },
                        {
                            "rule": "!has(self.a) || self.a.lowerAscii() == self.a",
                            "messageExpression": "'a must be lower case, not ' + self.a",
                        },
                    ],
                },
            },
        }
    },
}


def texts(obj, old=None):
    pruned, _ = prune_and_default(obj, SCHEMA)
    return [e.text() for e in validate(pruned, SCHEMA, old, has_old=old is not None)]


def test_prune_and_default():
    obj = {
        "apiVersion": "x/v1",
        "kind": "X",
        "metadata": {"name": "n", "anything": 1},
        "spec": {
            "name": "a",
            "junk": 1,
            "labels": {"k": "v"},
            "free": {"any": {"thing": 1}},
            "items": [{"name": "i", "extra": True}],
            "nullable": None,
            "port": None,
        },
        "other": 1,
    }
    pruned, unknown = prune_and_default(obj, SCHEMA)
    assert sorted(unknown) == ["other", "spec.items[0].extra", "spec.junk"]
    assert pruned["metadata"] == {"name": "n", "anything": 1}
    assert pruned["spec"]["replicas"] == 1
    assert pruned["spec"]["items"] == [{"name": "i", "w": 5}]
    assert pruned["spec"]["free"] == {"any": {"thing": 1}}
    assert "nullable" in pruned["spec"] and "port" not in pruned["spec"]


def test_valid_object_has_no_errors():
    assert texts({"spec": {"name": "ab", "port": "http", "ratio": 0.5, "either": {"a": "x"}}}) == []
    assert texts({"spec": {"name": "ab", "port": 8080}}) == []


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({}, "spec.name: Required value"),
        ({"name": ""}, 'spec.name: Invalid value: "": spec.name in body should be at least 1 chars long'),
        ({"name": "abcdef"}, "spec.name: Too long: may not be more than 5 bytes"),
        ({"name": "AB"}, "spec.name: Invalid value: \"AB\": spec.name in body should match '^[a-z]+$'"),
        (
            {"name": "a", "replicas": -1},
            "spec.replicas: Invalid value: -1: spec.replicas in body should be greater than or equal to 0",
        ),
        ({"name": "a", "ratio": 1}, "spec.ratio: Invalid value: 1: spec.ratio in body should be less than 1"),
        (
            {"name": "a", "port": 1.5},
            'spec.port: Invalid value: "number": spec.port in body must be of type integer or string: "number"',
        ),
        (
            {"name": "a", "labels": {"k": 1}},
            'spec.labels.k: Invalid value: "integer": spec.labels.k in body must be of type string: "integer"',
        ),
        ({"name": "a", "items": [{"name": "x"}, {"name": "x"}]}, 'spec.items[1]: Duplicate value: "object"'),
        ({"name": "a", "set": ["x", "x"]}, 'spec.set[1]: Duplicate value: "x"'),
        ({"name": "a", "either": {}}, "spec.either: Forbidden: set exactly one of a and b"),
        (
            {"name": "a", "either": {"a": "X"}},
            'spec.either: Invalid value: "object": a must be lower case, not X',
        ),
    ],
)
def test_errors_are_worded_like_the_api_server(spec, expected):
    assert expected in texts({"spec": spec})


def test_type_errors_stop_cel_rules():
    found = texts({"spec": {"name": "a", "either": {"a": 1}}})
    assert found == [
        'spec.either.a: Invalid value: "integer": spec.either.a in body must be of type string: "integer"'
    ]


def test_compile_errors():
    with pytest.raises(CelCompileError):
        compile_rule("self.a <")
