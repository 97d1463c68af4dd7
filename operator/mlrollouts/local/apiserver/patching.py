"""Patch semantics: JSON merge patch (RFC 7386), JSON patch (RFC 6902), strategic merge patch.

Strategic merge patch follows the ``patchStrategy``/``patchMergeKey`` tags of the built-in types for
the fields that ``kubectl apply`` of workloads, services and config maps touches: lists of named items
are merged by their key (containers by ``name``, container ports by ``containerPort``, service ports by
``port``, env by ``name``, volumes by ``name``, volume mounts by ``mountPath``...), other lists are
replaced, ``null`` deletes a key, and the directives ``$patch`` (``replace``/``delete``/``merge``),
``$retainKeys``, ``$setElementOrder/<list>`` and ``$deleteFromPrimitiveList/<list>`` are honoured.
"""

from __future__ import annotations

import copy
import json
import re
from typing import Any, cast

import jsonpatch
import yaml

# field name -> merge key of its list items, for the built-in types.
MERGE_KEYS: dict[str, str] = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "env": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "volumeDevices": "devicePath",
    "imagePullSecrets": "name",
    "hostAliases": "ip",
    "conditions": "type",
    "ownerReferences": "uid",
    "topologySpreadConstraints": "topologyKey",
    "resourceClaims": "name",
    "ephemeralContainerStatuses": "name",
    "containerStatuses": "name",
}
# Primitive lists merged as sets.
MERGED_PRIMITIVE_LISTS = {"finalizers"}


class PatchError(ValueError):
    """The patch cannot be applied to the object (wrong shape, failed test op...)."""


# --- apply bodies: JSON, else YAML 1.2 -------------------------------------------------------------

_YAML_1_1_ONLY = {
    "tag:yaml.org,2002:bool",
    "tag:yaml.org,2002:int",
    "tag:yaml.org,2002:float",
    "tag:yaml.org,2002:null",
    "tag:yaml.org,2002:timestamp",
}
_YAML_1_2_INT = re.compile(r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$")


class Yaml12Loader(yaml.SafeLoader):
    """PyYAML with the YAML 1.2 core schema: ``1e-07`` is a number, ``yes``/``on``/``010``/dates are
    not booleans, octals or timestamps (PyYAML alone reads YAML 1.1)."""


Yaml12Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag not in _YAML_1_1_ONLY]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
Yaml12Loader.add_implicit_resolver(
    "tag:yaml.org,2002:null", re.compile(r"^(?:~|null|Null|NULL|)$"), ["~", "n", "N", ""]
)
Yaml12Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
Yaml12Loader.add_implicit_resolver("tag:yaml.org,2002:int", _YAML_1_2_INT, list("-+0123456789"))
Yaml12Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
        r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
    ),
    list("-+.0123456789"),
)


def _construct_int(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> int:
    text = loader.construct_scalar(node)
    if text.startswith("0o"):
        return int(text[2:], 8)
    return int(text, 16) if text.startswith("0x") else int(text, 10)


Yaml12Loader.add_constructor("tag:yaml.org,2002:int", _construct_int)


def load_body(data: bytes | str) -> Any:
    """An apply body as the API server reads it: JSON, or else YAML 1.2."""
    try:
        return json.loads(data)
    except ValueError:
        return yaml.load(data, Loader=Yaml12Loader)


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: objects merge recursively, ``null`` deletes, everything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def json_patch(target: Any, operations: Any) -> Any:
    """RFC 6902 operations (add, remove, replace, move, copy, test)."""
    if not isinstance(operations, list):
        raise PatchError("a JSON patch must be a list of operations")
    try:
        return jsonpatch.JsonPatch(operations).apply(copy.deepcopy(target))
    except (
        jsonpatch.JsonPatchException,
        jsonpatch.JsonPointerException,
        KeyError,
        IndexError,
        TypeError,
    ) as exc:
        raise PatchError(str(exc)) from None


def _merge_key(field: str, *lists: Any) -> str | None:
    if field == "ports":
        for items in lists:
            for item in items or []:
                if isinstance(item, dict) and "containerPort" in item:
                    return "containerPort"
        return "port"
    return MERGE_KEYS.get(field)


def _strip_directives(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            k: _strip_directives(v)
            for k, v in value.items()
            if not (k.startswith("$setElementOrder/") or k.startswith("$deleteFromPrimitiveList/"))
            and k not in ("$patch", "$retainKeys")
        }
    if isinstance(value, list):
        return [
            _strip_directives(v) for v in value if not (isinstance(v, dict) and v.get("$patch") == "replace")
        ]
    return value


def strategic_merge_patch(target: Any, patch: Any) -> Any:
    """Apply a strategic merge patch to a built-in object."""
    if not isinstance(patch, dict):
        raise PatchError("a strategic merge patch must be a JSON object")
    result = _smp_map(target if isinstance(target, dict) else {}, patch)
    return {} if result is None else result


def _smp_map(target: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any] | None:
    directive = patch.get("$patch")
    if directive == "delete":
        return None
    if directive == "replace":
        return cast("dict[str, Any]", _strip_directives(patch))
    if directive not in (None, "merge"):
        raise PatchError(f"unknown patch directive {directive!r}")
    result = copy.deepcopy(target)
    orders: dict[str, list[Any]] = {}
    for key, value in patch.items():
        if key in ("$patch", "$retainKeys"):
            continue
        if key.startswith("$setElementOrder/"):
            orders[key.split("/", 1)[1]] = value
            continue
        if key.startswith("$deleteFromPrimitiveList/"):
            field = key.split("/", 1)[1]
            if isinstance(result.get(field), list):
                result[field] = [x for x in result[field] if x not in (value or [])]
            continue
        if value is None:
            result.pop(key, None)
        elif isinstance(value, dict):
            merged = _smp_map(result[key] if isinstance(result.get(key), dict) else {}, value)
            if merged is None:
                result.pop(key, None)
            else:
                result[key] = merged
        elif isinstance(value, list):
            result[key] = _smp_list(key, result.get(key), value)
        else:
            result[key] = value
    for field, order in orders.items():
        if isinstance(result.get(field), list):
            result[field] = _reorder(field, result[field], order)
    if "$retainKeys" in patch:
        keep = set(patch["$retainKeys"] or [])
        result = {k: v for k, v in result.items() if k in keep}
    return result


def _smp_list(field: str, target: Any, patch: list[Any]) -> list[Any]:
    target = target if isinstance(target, list) else []
    if any(isinstance(item, dict) and item.get("$patch") == "replace" for item in patch):
        return cast("list[Any]", _strip_directives(patch))
    if field in MERGED_PRIMITIVE_LISTS:
        result = list(target)
        for item in patch:
            if item not in result:
                result.append(item)
        return result
    key = _merge_key(field, target, patch)
    if key is None or not all(isinstance(item, dict) for item in patch):
        return cast("list[Any]", _strip_directives(patch))
    result = copy.deepcopy(target)
    for item in patch:
        if key not in item:
            raise PatchError(f"map: {item!r} does not contain declared merge key: {key}")
        positions = [
            i
            for i, existing in enumerate(result)
            if isinstance(existing, dict) and existing.get(key) == item[key]
        ]
        if item.get("$patch") == "delete":
            result = [x for i, x in enumerate(result) if i not in positions]
            continue
        if positions:
            merged = _smp_map(result[positions[0]], item)
            result[positions[0]] = merged if merged is not None else result[positions[0]]
        else:
            result.append(_strip_directives(item))
    return result


def _reorder(field: str, items: list[Any], order: list[Any]) -> list[Any]:
    key = _merge_key(field, items)

    def ident(item: Any) -> Any:
        return item.get(key) if key and isinstance(item, dict) else item

    wanted = [ident(o) for o in order]
    positioned = sorted(
        (item for item in items if ident(item) in wanted), key=lambda item: wanted.index(ident(item))
    )
    rest = [item for item in items if ident(item) not in wanted]
    return positioned + rest


def apply_merge(
    live: dict[str, Any], applied: dict[str, Any], previous: dict[str, Any] | None, *, strategic: bool
) -> dict[str, Any]:
    """Server-side apply, approximated: merge the applied configuration into the live object.

    Fields the same field manager applied last time and left out now are removed (as a single
    manager's ownership would do); lists of named items merge by key for built-in types, other lists
    are replaced. Managed fields and conflicts between managers are not tracked.
    """
    base = copy.deepcopy(live)
    if previous:
        _remove_dropped(base, previous, applied)
    if strategic:
        return cast("dict[str, Any]", strategic_merge_patch(base, applied))
    return cast("dict[str, Any]", _merge_keep_nulls(base, applied))


def _merge_keep_nulls(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict) or not isinstance(target, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target)
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = _merge_keep_nulls(result.get(key), value)
    return result


def _remove_dropped(live: Any, previous: Any, current: Any) -> None:
    if not isinstance(live, dict) or not isinstance(previous, dict):
        return
    current = current if isinstance(current, dict) else {}
    for key, old_value in previous.items():
        if key not in current:
            live.pop(key, None)
        elif isinstance(old_value, dict):
            _remove_dropped(live.get(key), old_value, current[key])
        elif (
            isinstance(old_value, list) and isinstance(current[key], list) and isinstance(live.get(key), list)
        ):
            merge_key = _merge_key(key, old_value, current[key])
            if merge_key and all(isinstance(i, dict) for i in old_value + current[key]):
                kept = {i.get(merge_key) for i in current[key]}
                dropped = {i.get(merge_key) for i in old_value} - kept
                live[key] = [
                    i for i in live[key] if not (isinstance(i, dict) and i.get(merge_key) in dropped)
                ]
