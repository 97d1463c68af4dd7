"""Label and field selectors with the syntax and semantics of the Kubernetes API."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from .errors import ApiError, bad_request

Matcher = Callable[[Mapping[str, Any]], bool]

_KEY = r"[A-Za-z0-9./_-]+"
_VALUE = r"[A-Za-z0-9._-]*"
_SET_RE = re.compile(rf"^\s*(?P<key>{_KEY})\s+(?P<op>in|notin)\s*\((?P<values>[^)]*)\)\s*$")
_OP_RE = re.compile(rf"^\s*(?P<key>{_KEY})\s*(?P<op>==|!=|=|>|<)\s*(?P<value>{_VALUE})\s*$")
_EXISTS_RE = re.compile(rf"^\s*(?P<neg>!?)\s*(?P<key>{_KEY})\s*$")


def _split_top_level(text: str) -> list[str]:
    """Split on commas that are not inside parentheses."""
    parts: list[str] = []
    current: list[str] = []
    depth = 0
    for char in text:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return [p for p in parts if p.strip()]


def parse_label_selector(text: str | None) -> Matcher:
    """Compile ``a=b,c!=d,e in (x,y),f notin (z),g,!h,n>3`` into a predicate over a label mapping."""
    if not text or not text.strip():
        return lambda labels: True
    checks: list[Matcher] = []
    for requirement in _split_top_level(text):
        checks.append(_parse_requirement(requirement))
    return lambda labels: all(check(labels) for check in checks)


def _parse_requirement(requirement: str) -> Matcher:
    if match := _SET_RE.match(requirement):
        key, op = match["key"], match["op"]
        values = {v.strip() for v in match["values"].split(",") if v.strip()}
        if not values:
            raise bad_request(
                f"unable to parse requirement: {requirement!r}: for 'in', 'notin' operators, values set can't be empty"
            )
        if op == "in":
            return lambda labels: key in labels and labels[key] in values
        return lambda labels: key not in labels or labels[key] not in values
    if match := _OP_RE.match(requirement):
        key, op, value = match["key"], match["op"], match["value"]
        if op in ("=", "=="):
            return lambda labels: labels.get(key) == value
        if op == "!=":
            return lambda labels: labels.get(key) != value
        try:
            number = int(value)
        except ValueError:
            raise bad_request(
                f"unable to parse requirement: {requirement!r}: for 'Gt', 'Lt' operators, the value must be an integer"
            ) from None

        def compare(labels: Mapping[str, Any]) -> bool:
            found = _int_or_none(labels.get(key))
            return found is not None and (found > number if op == ">" else found < number)

        return compare
    if match := _EXISTS_RE.match(requirement):
        key = match["key"]
        if match["neg"]:
            return lambda labels: key not in labels
        return lambda labels: key in labels
    raise bad_request(
        f"unable to parse requirement: found '{requirement.strip()}', expected: in, notin, =, ==, !=, gt, lt"
    )


def _int_or_none(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _split_unescaped(text: str, sep: str) -> list[str]:
    parts: list[str] = []
    current: list[str] = []
    escaped = False
    for char in text:
        if escaped:
            current.append(char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == sep:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return parts


def lookup_field(obj: Mapping[str, Any], path: str) -> str:
    """The value of a dotted field path as a field selector sees it (missing fields are empty)."""
    value: Any = obj
    for part in path.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return ""
        value = value[part]
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


def parse_field_selector(text: str | None, allowed: Callable[[str], bool] | None = None) -> Matcher:
    """Compile ``metadata.name=x,metadata.namespace!=y`` into a predicate over an object."""
    if not text or not text.strip():
        return lambda obj: True
    checks: list[Matcher] = []
    for requirement in _split_unescaped(text, ","):
        if not requirement.strip():
            continue
        match = re.match(r"^\s*([A-Za-z0-9_.\-/]+)\s*(==|!=|=)(.*)$", requirement, re.S)
        if not match:
            raise bad_request(f"invalid selector: '{text}'; can't understand '{requirement}'")
        field, op, value = match.group(1), match.group(2), match.group(3).strip()
        if allowed is not None and not allowed(field):
            raise bad_request(f"field label not supported: {field}")
        value = value.replace("\\", "")
        checks.append(_field_check(field, op, value))
    return lambda obj: all(check(obj) for check in checks)


def _field_check(field: str, op: str, value: str) -> Matcher:
    if op == "!=":
        return lambda obj: lookup_field(obj, field) != value
    return lambda obj: lookup_field(obj, field) == value


__all__ = ["ApiError", "Matcher", "lookup_field", "parse_field_selector", "parse_label_selector"]
