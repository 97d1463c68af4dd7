"""Custom resources against their CRD's ``openAPIV3Schema``: pruning, defaulting, validation, CEL.

Follows the API server's order: unknown fields are pruned (unless
``x-kubernetes-preserve-unknown-fields``), ``null`` in non-nullable fields is dropped, defaults fill
missing fields, then the value is validated (types, required, enums, bounds, lengths, patterns, item
and property counts, list-type map/set uniqueness) and the ``x-kubernetes-validations`` CEL rules are
evaluated with ``self`` (and ``oldSelf`` on updates for transition rules) by ``cel-python``.
"""

from __future__ import annotations

import copy
import functools
import math
import re
from collections.abc import Iterator
from typing import Any

from .errors import FieldError

_ROOT_KEEP = ("apiVersion", "kind", "metadata")
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
# A float64 holds every integer up to here exactly; the API server's integer check stops there too.
_FLOAT_EXACT_INTEGER = 2**53


def _child(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer" if _INT64_MIN <= value <= _INT64_MAX else "number"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _type_ok(value: Any, schema: dict[str, Any]) -> bool:
    if schema.get("x-kubernetes-int-or-string"):
        return isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool))
    wanted = schema.get("type")
    if not wanted:
        return True
    if wanted == "integer":
        if isinstance(value, float):
            return value.is_integer() and abs(value) <= _FLOAT_EXACT_INTEGER
        return _json_type(value) == "integer"
    if wanted == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    if wanted == "object":
        return isinstance(value, dict)
    if wanted == "array":
        return isinstance(value, list)
    return bool(_json_type(value) == wanted)


def _fmt_number(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


# ---------------------------------------------------------------------------------------------- pruning


def prune_and_default(obj: dict[str, Any], schema: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Return a pruned and defaulted copy of ``obj`` and the paths of the unknown fields it dropped."""
    result = as_decoded(obj)
    unknown: list[str] = []
    _prune(result, schema, "", unknown, root=True)
    _default(result, schema)
    _integers_as_int(result, schema)
    return result, unknown


def as_decoded(value: Any) -> Any:
    """A copy of ``value`` with the numbers the API server's JSON decoder would produce: an integer
    beyond int64 becomes a floating-point number (an integer field then refuses it by its type)."""
    if isinstance(value, dict):
        return {key: as_decoded(item) for key, item in value.items()}
    if isinstance(value, list):
        return [as_decoded(item) for item in value]
    if isinstance(value, int) and not isinstance(value, bool) and not _INT64_MIN <= value <= _INT64_MAX:
        return float(value)
    return value


def _integers_as_int(value: Any, schema: dict[str, Any]) -> None:
    """An integer field written as ``2.0`` is stored as ``2``, as the API server's encoder writes it."""
    if isinstance(value, dict):
        props = schema.get("properties") or {}
        additional = schema.get("additionalProperties")
        for key, item in value.items():
            sub = props.get(key, additional if isinstance(additional, dict) else None)
            if sub is not None:
                value[key] = _integer_or_same(item, sub)
                _integers_as_int(value[key], sub)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for index, item in enumerate(value):
            value[index] = _integer_or_same(item, schema["items"])
            _integers_as_int(value[index], schema["items"])


def _integer_or_same(value: Any, schema: dict[str, Any]) -> Any:
    if schema.get("type") == "integer" and isinstance(value, float) and _type_ok(value, schema):
        return int(value)
    return value


def _prune(value: Any, schema: dict[str, Any], path: str, unknown: list[str], root: bool = False) -> None:
    if isinstance(value, dict):
        if schema.get("x-kubernetes-embedded-resource"):
            pass  # apiVersion/kind/metadata of embedded objects are kept
        props = schema.get("properties")
        additional = schema.get("additionalProperties")
        preserve = schema.get("x-kubernetes-preserve-unknown-fields", False)
        for key in list(value):
            if root and key in _ROOT_KEEP:
                continue
            if schema.get("x-kubernetes-embedded-resource") and key in _ROOT_KEEP:
                continue
            sub = (props or {}).get(key)
            if sub is None and isinstance(additional, dict):
                sub = additional
            if sub is None:
                if preserve or additional is True:
                    continue
                unknown.append(_child(path, key))
                del value[key]
                continue
            if value[key] is None and not sub.get("nullable", False):
                del value[key]
                continue
            _prune(value[key], sub, _child(path, key), unknown)
    elif isinstance(value, list):
        items = schema.get("items")
        if isinstance(items, dict):
            for index, item in enumerate(value):
                _prune(item, items, f"{path}[{index}]", unknown)


def _default(value: Any, schema: dict[str, Any]) -> None:
    if isinstance(value, dict):
        props = schema.get("properties") or {}
        for key, sub in props.items():
            if key not in value and "default" in sub:
                value[key] = copy.deepcopy(sub["default"])
            if key in value:
                _default(value[key], sub)
        additional = schema.get("additionalProperties")
        if isinstance(additional, dict):
            for key in value:
                if key not in props:
                    _default(value[key], additional)
    elif isinstance(value, list):
        items = schema.get("items")
        if isinstance(items, dict):
            for item in value:
                _default(item, items)


# ---------------------------------------------------------------------------------------------- validation


def validate(
    value: Any, schema: dict[str, Any], old: Any = None, *, has_old: bool = False
) -> list[FieldError]:
    """Every field error of ``value`` (the whole custom resource) against its schema."""
    errors: list[FieldError] = []
    root_schema = dict(schema)
    props = dict(root_schema.get("properties") or {})
    props.pop("metadata", None)  # object metadata is validated by the API machinery, not the schema
    root_schema["properties"] = props
    _validate(value, root_schema, "", old, has_old, errors, root=True)
    # Like the API server, CEL rules run unless the value has type errors (they could not evaluate).
    if not any("in body must be of type" in err.detail for err in errors):
        _walk_cel(value, root_schema, "", old, has_old, errors, root=True)
    return _without_repeats(errors)


def _without_repeats(errors: list[FieldError]) -> list[FieldError]:
    """A field missing for the schema and for a CEL rule that reads it is reported once."""
    seen: set[tuple[str, str, str]] = set()
    unique = []
    for err in errors:
        key = (err.type, err.field, err.detail)
        if key not in seen:
            seen.add(key)
            unique.append(err)
    return unique


def _walk_cel(
    value: Any,
    schema: dict[str, Any],
    path: str,
    old: Any,
    has_old: bool,
    errors: list[FieldError],
    root: bool = False,
) -> None:
    if value is None:
        return
    for child in _children(value, schema, path, old, has_old, root):
        _walk_cel(*child, errors)
    if schema.get("x-kubernetes-validations"):
        _check_cel(value, schema, path, old, has_old, errors)


def _validate(
    value: Any,
    schema: dict[str, Any],
    path: str,
    old: Any,
    has_old: bool,
    errors: list[FieldError],
    root: bool = False,
) -> None:
    if value is None:
        if not schema.get("nullable", False) and schema.get("type"):
            errors.append(
                FieldError(
                    "Invalid", path, "null", f'{path} in body must be of type {schema["type"]}: "null"'
                )
            )
        return
    if not _type_ok(value, schema):
        actual = _json_type(value)
        wanted = "integer or string" if schema.get("x-kubernetes-int-or-string") else schema["type"]
        errors.append(
            FieldError("Invalid", path, actual, f'{path} in body must be of type {wanted}: "{actual}"')
        )
        return
    _check_scalar(value, schema, path, errors)
    if isinstance(value, dict):
        _check_object(value, schema, path, old, has_old, errors, root)
    elif isinstance(value, list):
        _check_array(value, schema, path, old, has_old, errors)
    for keyword in ("allOf", "anyOf", "oneOf", "not"):
        if keyword in schema:
            _check_combinator(keyword, value, schema[keyword], path, errors)


def _check_scalar(value: Any, schema: dict[str, Any], path: str, errors: list[FieldError]) -> None:
    if "enum" in schema and value not in schema["enum"]:
        supported = ", ".join(f'"{v}"' if isinstance(v, str) else _fmt_number(v) for v in schema["enum"])
        errors.append(FieldError("Unsupported", path, value, f"supported values: {supported}"))
    if isinstance(value, int | float) and not isinstance(value, bool):
        if "maximum" in schema:
            limit = schema["maximum"]
            if schema.get("exclusiveMaximum") and value >= limit:
                errors.append(
                    FieldError(
                        "Invalid", path, value, f"{path} in body should be less than {_fmt_number(limit)}"
                    )
                )
            elif value > limit:
                errors.append(
                    FieldError(
                        "Invalid",
                        path,
                        value,
                        f"{path} in body should be less than or equal to {_fmt_number(limit)}",
                    )
                )
        if "minimum" in schema:
            limit = schema["minimum"]
            if schema.get("exclusiveMinimum") and value <= limit:
                errors.append(
                    FieldError(
                        "Invalid", path, value, f"{path} in body should be greater than {_fmt_number(limit)}"
                    )
                )
            elif value < limit:
                errors.append(
                    FieldError(
                        "Invalid",
                        path,
                        value,
                        f"{path} in body should be greater than or equal to {_fmt_number(limit)}",
                    )
                )
        if schema.get("multipleOf"):
            ratio = value / schema["multipleOf"]
            if not math.isclose(ratio, round(ratio)):
                errors.append(
                    FieldError(
                        "Invalid",
                        path,
                        value,
                        f"{path} in body should be a multiple of {_fmt_number(schema['multipleOf'])}",
                    )
                )
    if isinstance(value, str):
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            errors.append(
                FieldError("TooLong", path, value, f"may not be more than {schema['maxLength']} bytes")
            )
        if "minLength" in schema and len(value) < schema["minLength"]:
            errors.append(
                FieldError(
                    "Invalid",
                    path,
                    value,
                    f"{path} in body should be at least {schema['minLength']} chars long",
                )
            )
        if "pattern" in schema and not re.search(schema["pattern"], value):
            errors.append(
                FieldError("Invalid", path, value, f"{path} in body should match '{schema['pattern']}'")
            )


def _check_object(
    value: dict[str, Any],
    schema: dict[str, Any],
    path: str,
    old: Any,
    has_old: bool,
    errors: list[FieldError],
    root: bool,
) -> None:
    for name in schema.get("required") or []:
        if name not in value:
            errors.append(FieldError("Required", _child(path, name), None))
    if "maxProperties" in schema and len(value) > schema["maxProperties"]:
        errors.append(
            FieldError("TooMany", path, len(value), f"must have at most {schema['maxProperties']} items")
        )
    if "minProperties" in schema and len(value) < schema["minProperties"]:
        errors.append(
            FieldError(
                "Invalid",
                path,
                len(value),
                f"{path} in body should have at least {schema['minProperties']} properties",
            )
        )
    for child in _object_children(value, schema, path, old, has_old, root):
        _validate(*child, errors)


def _list_item_key(item: Any, keys: list[str]) -> tuple[Any, ...]:
    return tuple(repr(item.get(k)) if isinstance(item, dict) else repr(item) for k in keys)


# A child to check: (value, schema, path, old value, whether an old value exists).
_Child = tuple[Any, dict[str, Any], str, Any, bool]


def _children(
    value: Any, schema: dict[str, Any], path: str, old: Any, has_old: bool, root: bool
) -> Iterator[_Child]:
    if isinstance(value, dict):
        yield from _object_children(value, schema, path, old, has_old, root)
    elif isinstance(value, list):
        yield from _array_children(value, schema, path, old, has_old)


def _object_children(
    value: dict[str, Any], schema: dict[str, Any], path: str, old: Any, has_old: bool, root: bool
) -> Iterator[_Child]:
    """The properties that have a schema, each paired with its old value for transition rules."""
    props = schema.get("properties") or {}
    additional = schema.get("additionalProperties")
    old_map = old if isinstance(old, dict) else {}
    for key, sub_value in value.items():
        if root and key in _ROOT_KEEP and key not in props:
            continue
        sub = props.get(key)
        if sub is None and isinstance(additional, dict):
            sub = additional
        if sub is not None:
            yield sub_value, sub, _child(path, key), old_map.get(key), has_old and key in old_map


def _array_children(
    value: list[Any], schema: dict[str, Any], path: str, old: Any, has_old: bool
) -> Iterator[_Child]:
    """The items, when the schema has one; only map lists pair an item with an old one (by its keys)."""
    items = schema.get("items")
    if not isinstance(items, dict):
        return
    keys = schema.get("x-kubernetes-list-map-keys") or []
    old_by_key = (
        {_list_item_key(item, keys): item for item in old}
        if isinstance(old, list) and keys and schema.get("x-kubernetes-list-type") == "map"
        else {}
    )
    for index, item in enumerate(value):
        old_item, item_has_old = None, False
        if old_by_key:
            ident = _list_item_key(item, keys)
            item_has_old = has_old and ident in old_by_key
            old_item = old_by_key.get(ident)
        yield item, items, f"{path}[{index}]", old_item, item_has_old


def _check_array(
    value: list[Any], schema: dict[str, Any], path: str, old: Any, has_old: bool, errors: list[FieldError]
) -> None:
    if "maxItems" in schema and len(value) > schema["maxItems"]:
        errors.append(
            FieldError("TooMany", path, len(value), f"must have at most {schema['maxItems']} items")
        )
    if "minItems" in schema and len(value) < schema["minItems"]:
        errors.append(
            FieldError(
                "Invalid", path, len(value), f"{path} in body should have at least {schema['minItems']} items"
            )
        )
    list_type = schema.get("x-kubernetes-list-type")
    keys = schema.get("x-kubernetes-list-map-keys") or []
    if list_type == "map" and keys:
        seen: set[tuple[Any, ...]] = set()
        for index, item in enumerate(value):
            ident = _list_item_key(item, keys)
            if ident in seen:
                shown = {k: item.get(k) for k in keys} if isinstance(item, dict) else item
                errors.append(FieldError("Duplicate", f"{path}[{index}]", shown))
            seen.add(ident)
    elif list_type == "set":
        seen_values: list[Any] = []
        for index, item in enumerate(value):
            if item in seen_values:
                errors.append(FieldError("Duplicate", f"{path}[{index}]", item))
            seen_values.append(item)
    for child in _array_children(value, schema, path, old, has_old):
        _validate(*child, errors)


def _check_combinator(keyword: str, value: Any, subs: Any, path: str, errors: list[FieldError]) -> None:
    def passes(sub: dict[str, Any]) -> bool:
        found: list[FieldError] = []
        _validate(value, sub, path, None, False, found)
        return not found

    if keyword == "not":
        if passes(subs):
            errors.append(
                FieldError("Invalid", path, value, f"{path} in body must not validate the schema (not)")
            )
        return
    results = [passes(sub) for sub in subs]
    if keyword == "allOf" and not all(results):
        for sub in subs:
            _validate(value, sub, path, None, False, errors)
    elif keyword == "anyOf" and not any(results):
        errors.append(
            FieldError("Invalid", path, value, f"{path} in body must validate at least one schema (anyOf)")
        )
    elif keyword == "oneOf" and results.count(True) != 1:
        errors.append(
            FieldError(
                "Invalid", path, value, f"{path} in body must validate one and only one schema (oneOf)"
            )
        )


# ---------------------------------------------------------------------------------------------- CEL


class CelCompileError(ValueError):
    pass


@functools.cache
def _environment() -> Any:
    import celpy

    return celpy.Environment()


def _cel_functions() -> dict[str, Any]:
    from celpy import celtypes

    def is_sorted(items: Any) -> Any:
        seq = list(items)
        return celtypes.BoolType(all(seq[i] <= seq[i + 1] for i in range(len(seq) - 1)))

    def total(items: Any) -> Any:
        seq = list(items)
        if not seq:
            return celtypes.IntType(0)
        result = seq[0]
        for item in seq[1:]:
            result = result + item
        return result

    def minimum(items: Any) -> Any:
        return min(list(items))

    def maximum(items: Any) -> Any:
        return max(list(items))

    def index_of(target: Any, sub: Any) -> Any:
        if isinstance(target, str):
            return celtypes.IntType(target.find(sub))
        seq = list(target)
        return celtypes.IntType(seq.index(sub) if sub in seq else -1)

    def last_index_of(target: Any, sub: Any) -> Any:
        if isinstance(target, str):
            return celtypes.IntType(target.rfind(sub))
        seq = list(target)
        return celtypes.IntType(len(seq) - 1 - seq[::-1].index(sub) if sub in seq else -1)

    return {
        "isSorted": is_sorted,
        "sum": total,
        "min": minimum,
        "max": maximum,
        "indexOf": index_of,
        "lastIndexOf": last_index_of,
        "lowerAscii": lambda s: celtypes.StringType(str(s).lower()),
        "upperAscii": lambda s: celtypes.StringType(str(s).upper()),
        "trim": lambda s: celtypes.StringType(str(s).strip()),
        "split": lambda s, sep: celtypes.ListType([celtypes.StringType(p) for p in str(s).split(str(sep))]),
        "join": lambda items, sep="": celtypes.StringType(str(sep).join(str(i) for i in items)),
        "replace": lambda s, a, b: celtypes.StringType(str(s).replace(str(a), str(b))),
    }


@functools.lru_cache(maxsize=1024)
def compile_rule(rule: str) -> Any:
    """Compile a CEL rule once; raises :class:`CelCompileError` with the parser's message."""
    import celpy

    env = _environment()
    try:
        ast = env.compile(rule)
    except celpy.CELParseError as exc:  # type: ignore[attr-defined]
        raise CelCompileError(str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)) from None
    return env.program(ast, functions=_cel_functions())


def iter_rules(schema: dict[str, Any], path: str = "openAPIV3Schema") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every ``x-kubernetes-validations`` rule of a schema, with its location in the schema."""
    for index, rule in enumerate(schema.get("x-kubernetes-validations") or []):
        yield f"{path}.x-kubernetes-validations[{index}].rule", rule
    for key, sub in (schema.get("properties") or {}).items():
        if isinstance(sub, dict):
            yield from iter_rules(sub, f"{path}.properties[{key}]")
    if isinstance(schema.get("items"), dict):
        yield from iter_rules(schema["items"], f"{path}.items")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from iter_rules(schema["additionalProperties"], f"{path}.additionalProperties")


def _uses_old_self(rule: str) -> bool:
    return re.search(r"\boldSelf\b", rule) is not None


_REASON_TYPES = {
    "FieldValueInvalid": "Invalid",
    "FieldValueRequired": "Required",
    "FieldValueForbidden": "Forbidden",
    "FieldValueDuplicate": "Duplicate",
}


_MISSING_MEMBER = re.compile(r"no such (?:member in mapping|key):? '?([^'\s]+)'?")


def _error_text(error: BaseException) -> str:
    """The evaluator's own message, without the Python exception type it carries along."""
    first = error.args[0] if error.args else error
    while isinstance(first, tuple) and first:
        first = first[0]
    return str(first)


def _evaluation_error(error: BaseException, rule: str, kind: str, field: str, value: Any) -> FieldError:
    """A rule that could not be evaluated; a field it reads that is absent is a missing field."""
    text = _error_text(error)
    missing = _MISSING_MEMBER.search(text)
    if missing:
        return FieldError("Required", _missing_field_path(rule, field, missing.group(1)), None)
    return FieldError(kind, field, value, f"{text} evaluating rule: {rule}")


def _missing_field_path(rule: str, path: str, member: str) -> str:
    """Where ``member`` sits: the ``self.a.b.member`` the rule reads, else right under ``path``."""
    read = re.search(r"\bself((?:\.\w+)*)\." + re.escape(member) + r"\b", rule)
    chain = read.group(1).lstrip(".") if read else ""
    return _child(path, f"{chain}.{member}" if chain else member)


def _check_cel(
    value: Any, schema: dict[str, Any], path: str, old: Any, has_old: bool, errors: list[FieldError]
) -> None:
    import celpy

    activation: dict[str, Any] = {"self": celpy.json_to_cel(value)}  # type: ignore[attr-defined]
    if has_old:
        activation["oldSelf"] = celpy.json_to_cel(old)  # type: ignore[attr-defined]
    for rule_spec in schema["x-kubernetes-validations"]:
        rule = rule_spec.get("rule", "")
        if _uses_old_self(rule) and not has_old and not rule_spec.get("optionalOldSelf"):
            continue  # transition rules only run on updates
        field = path
        if rule_spec.get("fieldPath"):
            field = (
                (path + rule_spec["fieldPath"])
                if rule_spec["fieldPath"].startswith(".")
                else _child(path, rule_spec["fieldPath"])
            )
            field = field.lstrip(".")
        kind = _REASON_TYPES.get(rule_spec.get("reason", "FieldValueInvalid"), "Invalid")
        try:
            program = compile_rule(rule)
            result = program.evaluate(activation)
        except CelCompileError as exc:
            errors.append(FieldError("Invalid", field, value, f"compilation failed: {exc}"))
            continue
        except Exception as exc:  # evaluation errors are reported like the API server does
            errors.append(_evaluation_error(exc, rule, kind, field, value))
            continue
        if isinstance(result, celpy.CELEvalError):  # type: ignore[attr-defined]
            errors.append(_evaluation_error(result, rule, kind, field, value))
            continue
        if result is True or (
            not isinstance(result, celpy.CELEvalError)  # type: ignore[attr-defined]
            and bool(result)
            and type(result).__name__ == "BoolType"
        ):
            continue
        message = rule_spec.get("message") or f"failed rule: {rule}"
        if rule_spec.get("messageExpression"):
            try:
                custom = compile_rule(rule_spec["messageExpression"]).evaluate(activation)
                if isinstance(custom, str) and custom.strip():
                    message = str(custom)
            except Exception:
                pass
        errors.append(FieldError(kind, field, value if kind != "Required" else None, message))
