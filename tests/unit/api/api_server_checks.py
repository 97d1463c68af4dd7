"""What a Kubernetes API server does with a custom resource before storing it, for tests:

1. unknown fields are reported (kubectl's default ``--validate=strict``),
2. structural defaults are applied,
3. the object is validated against the OpenAPI schema (draft-4 semantics, as the server does),
4. every ``x-kubernetes-validations`` CEL rule is evaluated with ``self`` bound to its node.

CEL runs in cel-python. Numbers are typed by the schema (a ``number`` field is a double even when
written as ``1``), as the API server does. Two functions of the Kubernetes CEL list library that
the rules use, ``isSorted()`` and ``sum()``, are provided here with the Kubernetes semantics.
"""

from __future__ import annotations

import copy
import re
from functools import cache
from pathlib import Path
from typing import Any

import celpy
import jsonschema
import yaml
from celpy import celtypes

ROOT = Path(__file__).resolve().parents[3]
CRD_DIR = ROOT / "crds"


@cache
def crd_schemas() -> dict[str, dict[str, Any]]:
    """kind -> openAPIV3Schema of the committed CRDs."""
    schemas = {}
    for path in sorted(CRD_DIR.glob("*.yaml")):
        crd = yaml.safe_load(path.read_text())
        schemas[crd["spec"]["names"]["kind"]] = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schemas


def walk_rules(schema: dict[str, Any], path: str = ""):
    """Every (schema path, rule) pair in a schema."""
    for rule in schema.get("x-kubernetes-validations", []):
        yield path, rule
    for name, child in schema.get("properties", {}).items():
        yield from walk_rules(child, f"{path}.{name}" if path else name)
    if isinstance(schema.get("items"), dict):
        yield from walk_rules(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from walk_rules(schema["additionalProperties"], f"{path}{{}}")


# --- Kubernetes CEL list library (the parts the rules use) -----------------------------------------


def _is_sorted(values: celtypes.ListType) -> celtypes.BoolType:
    return celtypes.BoolType(all(values[i] <= values[i + 1] for i in range(len(values) - 1)))


def _sum(values: celtypes.ListType) -> Any:
    total: Any = celtypes.IntType(0)
    for value in values:
        total = value if total == 0 and isinstance(value, celtypes.DoubleType) else total + value
    return total


K8S_FUNCTIONS = {"isSorted": _is_sorted, "sum": _sum}
_ENV = celpy.Environment()


@cache
def compile_rule(rule: str) -> celpy.Runner:
    return _ENV.program(_ENV.compile(rule), functions=K8S_FUNCTIONS)


# --- the steps ------------------------------------------------------------------------------------


def apply_defaults(schema: dict[str, Any], value: Any) -> Any:
    """Structural defaulting: a missing property with a default gets it, recursively."""
    if isinstance(value, dict):
        for name, child in schema.get("properties", {}).items():
            if name not in value and "default" in child:
                value[name] = copy.deepcopy(child["default"])
            if name in value:
                value[name] = apply_defaults(child, value[name])
        if isinstance(schema.get("additionalProperties"), dict):
            for key in value:
                value[key] = apply_defaults(schema["additionalProperties"], value[key])
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [apply_defaults(schema["items"], item) for item in value]
    return value


def unknown_fields(schema: dict[str, Any], value: Any, path: str = "") -> list[str]:
    if schema.get("x-kubernetes-preserve-unknown-fields"):
        return []
    problems = []
    if isinstance(value, dict) and "properties" in schema:
        for key, child in value.items():
            child_path = f"{path}.{key}" if path else key
            if key not in schema["properties"]:
                if not (path == "" and key in ("apiVersion", "kind", "metadata")):
                    problems.append(f'unknown field "{child_path}"')
            else:
                problems += unknown_fields(schema["properties"][key], child, child_path)
    elif isinstance(value, dict) and isinstance(schema.get("additionalProperties"), dict):
        for key, child in value.items():
            problems += unknown_fields(schema["additionalProperties"], child, f"{path}.{key}")
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for index, item in enumerate(value):
            problems += unknown_fields(schema["items"], item, f"{path}[{index}]")
    return problems


INT64 = 2**63
FLOAT_EXACT_INTEGER = 2**53


def decoded(value: Any) -> Any:
    """Numbers as the API server's JSON decoder reads them: an integer beyond int64 is a float."""
    if isinstance(value, dict):
        return {k: decoded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [decoded(v) for v in value]
    if isinstance(value, int) and not isinstance(value, bool) and not -INT64 <= value < INT64:
        return float(value)
    return value


def _is_integer(_checker: Any, value: Any) -> bool:
    """The API server's integer: an int, or a float that is exactly an integer (up to 2^53)."""
    if isinstance(value, bool):
        return False
    if isinstance(value, float):
        return value.is_integer() and abs(value) <= FLOAT_EXACT_INTEGER
    return isinstance(value, int)


_Validator = jsonschema.validators.extend(
    jsonschema.Draft4Validator,
    type_checker=jsonschema.Draft4Validator.TYPE_CHECKER.redefine("integer", _is_integer),
)


def schema_errors(schema: dict[str, Any], value: Any) -> list[str]:
    problems = []
    for error in _Validator(schema).iter_errors(value):
        path = ""
        for part in error.absolute_path:
            path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
        if error.validator == "required":  # worded as the API server words it
            missing = re.search(r"'([^']+)' is a required property", error.message)
            problems.append(f"{path}.{missing.group(1) if missing else '?'}: Required value".lstrip("."))
        else:
            problems.append(f"{path or '<root>'}: {error.message}")
    return problems


def to_cel(schema: dict[str, Any], value: Any) -> Any:
    """A JSON value as a CEL value, typed by its schema."""
    if isinstance(value, dict):
        props = schema.get("properties", {})
        extra = (
            schema.get("additionalProperties") if isinstance(schema.get("additionalProperties"), dict) else {}
        )
        return celtypes.MapType(
            {celtypes.StringType(k): to_cel(props.get(k, extra), v) for k, v in value.items()}
        )
    if isinstance(value, list):
        return celtypes.ListType([to_cel(schema.get("items", {}), v) for v in value])
    if schema.get("type") == "number" and isinstance(value, int | float) and not isinstance(value, bool):
        return celtypes.DoubleType(float(value))
    return celpy.json_to_cel(value)


def cel_failures(schema: dict[str, Any], value: Any, path: str = "") -> list[str]:
    """Messages of the CEL rules that reject `value` (an evaluation error rejects too)."""
    problems = []
    for entry in schema.get("x-kubernetes-validations", []):
        try:
            result = compile_rule(entry["rule"]).evaluate({"self": to_cel(schema, value)})
        except celpy.CELEvalError as exc:  # raised for errors outside a logical operator
            result = exc
        missing = re.search(r"no such member in mapping: '([^']+)'", str(result))
        if isinstance(result, celpy.CELEvalError) and missing:  # the field a rule reads is absent
            problems.append(f"{path}.{missing.group(1)}: Required value".lstrip("."))
        elif isinstance(result, celpy.CELEvalError):
            problems.append(f"{path or '<root>'}: error evaluating {entry['rule']!r}: {result}")
        elif not result:
            problems.append(f"{path or '<root>'}: {entry['message']}")
    if isinstance(value, dict):
        for name, child in schema.get("properties", {}).items():
            if name in value:
                problems += cel_failures(child, value[name], f"{path}.{name}" if path else name)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for index, item in enumerate(value):
            problems += cel_failures(schema["items"], item, f"{path}[{index}]")
    return problems


SERVED_VERSION = "mlrollouts.io/v1alpha1"
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def metadata_errors(obj: dict[str, Any]) -> list[str]:
    """What kubectl and the API machinery refuse before the schema is looked at."""
    if obj.get("apiVersion") != SERVED_VERSION:
        return [f'no matches for kind "{obj.get("kind")}" in version "{obj.get("apiVersion")}"']
    name = str((obj.get("metadata") or {}).get("name") or "")
    if len(name) > 253 or not DNS_SUBDOMAIN.match(name):
        return [f'metadata.name: Invalid value: "{name}": a lowercase RFC 1123 subdomain']
    return []


def server_side_errors(obj: dict[str, Any]) -> list[str]:
    """Every reason the API server would refuse `obj` (an empty list: it would store it)."""
    problems = metadata_errors(obj)
    if problems:
        return problems
    schema = crd_schemas()[obj["kind"]]
    obj = decoded(obj)
    problems = unknown_fields(schema, obj)
    defaulted = apply_defaults(schema, copy.deepcopy(obj))
    problems += schema_errors(schema, defaulted)
    problems += cel_failures(schema, defaulted)
    return list(dict.fromkeys(problems))
