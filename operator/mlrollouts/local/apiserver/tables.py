"""Server-side printing: ``meta.k8s.io/v1`` ``Table`` responses that ``kubectl get`` shows as columns.

Custom resources get their CRD's ``additionalPrinterColumns`` (JSONPath, evaluated with
``jsonpath-ng``); built-in kinds get the usual columns of their kind.
"""

from __future__ import annotations

import datetime
import functools
from collections.abc import Callable
from typing import Any

from jsonpath_ng.ext import parse as parse_jsonpath  # type: ignore[attr-defined]

from .resources import ResourceType

Column = dict[str, Any]
Cell = Callable[[dict[str, Any], datetime.datetime], Any]


def human_duration(delta: datetime.timedelta) -> str:
    """The short age format of kubectl (``5s``, ``3m20s``, ``2d3h``, ``400d``)."""
    seconds = int(delta.total_seconds())
    if seconds < 0:
        seconds = 0
    if seconds < 120:
        return f"{seconds}s"
    minutes = seconds // 60
    if minutes < 10:
        return _with_remainder(minutes, "m", seconds % 60, "s")
    if minutes < 180:
        return f"{minutes}m"
    hours = seconds // 3600
    if hours < 8:
        return _with_remainder(hours, "h", minutes % 60, "m")
    if hours < 48:
        return f"{hours}h"
    days = hours // 24
    if hours < 24 * 8:
        return _with_remainder(days, "d", hours % 24, "h")
    if days < 365 * 2:
        return f"{days}d"
    return f"{days // 365}y"


def _with_remainder(whole: int, unit: str, rest: int, rest_unit: str) -> str:
    """``3m20s``; kubectl leaves out a zero remainder (``3m``)."""
    return f"{whole}{unit}{rest}{rest_unit}" if rest else f"{whole}{unit}"


def _parse_time(text: Any) -> datetime.datetime | None:
    if not isinstance(text, str) or not text:
        return None
    try:
        return datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


def _age(obj: dict[str, Any], now: datetime.datetime) -> str:
    created = _parse_time((obj.get("metadata") or {}).get("creationTimestamp"))
    return human_duration(now - created) if created else "<unknown>"


@functools.lru_cache(maxsize=512)
def _compiled(path: str) -> Any:
    path = path.strip()
    if path.startswith("{") and path.endswith("}"):
        path = path[1:-1]
    if not path.startswith("$"):
        path = "$" + (path if path.startswith((".", "[")) else "." + path)
    return parse_jsonpath(path)


def jsonpath_value(obj: dict[str, Any], path: str) -> Any:
    try:
        matches = [m.value for m in _compiled(path).find(obj)]
    except Exception:
        return None
    if not matches:
        return None
    return matches[0] if len(matches) == 1 else matches


def _custom_cell(column: Column) -> Cell:
    kind = column.get("type", "string")

    def cell(obj: dict[str, Any], now: datetime.datetime) -> Any:
        value = jsonpath_value(obj, column.get("jsonPath", ""))
        if value is None:
            return None
        if kind == "date":
            when = _parse_time(value)
            return human_duration(now - when) if when else value
        if isinstance(value, dict | list):
            import json

            return json.dumps(value, separators=(",", ":"))
        return value

    return cell


def _name_column() -> Column:
    return {
        "name": "Name",
        "type": "string",
        "format": "name",
        "description": "Name must be unique within a namespace.",
        "priority": 0,
    }


def _age_column() -> Column:
    return {
        "name": "Age",
        "type": "string",
        "format": "",
        "description": "CreationTimestamp is a timestamp representing the server time when this object was created.",
        "priority": 0,
    }


def _col(name: str, kind: str = "string", priority: int = 0) -> Column:
    return {"name": name, "type": kind, "format": "", "description": name, "priority": priority}


def _ready_replicas(obj: dict[str, Any], now: datetime.datetime) -> str:
    status = obj.get("status") or {}
    return f"{status.get('readyReplicas', 0)}/{(obj.get('spec') or {}).get('replicas', 1)}"


def _service_ports(obj: dict[str, Any], now: datetime.datetime) -> str:
    ports = (obj.get("spec") or {}).get("ports") or []
    return ",".join(f"{p.get('port')}/{p.get('protocol', 'TCP')}" for p in ports) or "<none>"


def _pod_ready(obj: dict[str, Any], now: datetime.datetime) -> str:
    statuses = (obj.get("status") or {}).get("containerStatuses") or []
    containers = (obj.get("spec") or {}).get("containers") or []
    return f"{sum(1 for s in statuses if s.get('ready'))}/{len(containers)}"


_BUILTIN_COLUMNS: dict[tuple[str, str], list[tuple[Column, Cell]]] = {
    ("apps", "deployments"): [
        (_col("Ready"), _ready_replicas),
        (_col("Up-to-date", "integer"), lambda o, n: (o.get("status") or {}).get("updatedReplicas", 0)),
        (_col("Available", "integer"), lambda o, n: (o.get("status") or {}).get("availableReplicas", 0)),
    ],
    ("", "pods"): [
        (_col("Ready"), _pod_ready),
        (_col("Status"), lambda o, n: (o.get("status") or {}).get("phase", "Pending")),
    ],
    ("", "services"): [
        (_col("Type"), lambda o, n: (o.get("spec") or {}).get("type", "ClusterIP")),
        (_col("Cluster-IP"), lambda o, n: (o.get("spec") or {}).get("clusterIP", "<none>")),
        (_col("Ports"), _service_ports),
    ],
    ("", "configmaps"): [
        (_col("Data", "integer"), lambda o, n: len(o.get("data") or {}) + len(o.get("binaryData") or {})),
    ],
    ("", "namespaces"): [
        (_col("Status"), lambda o, n: (o.get("status") or {}).get("phase", "Active")),
    ],
    ("", "events"): [
        (_col("Type"), lambda o, n: o.get("type", "")),
        (_col("Reason"), lambda o, n: o.get("reason", "")),
        (_col("Message"), lambda o, n: o.get("message", "")),
    ],
}


def columns_for(rt: ResourceType) -> list[tuple[Column, Cell]]:
    if rt.is_custom:
        if not rt.printer_columns:
            return [(_name_column(), _name_cell), (_age_column(), _age)]
        result: list[tuple[Column, Cell]] = [(_name_column(), _name_cell)]
        for column in rt.printer_columns:
            definition = {
                "name": column["name"],
                "type": "string" if column.get("type") == "date" else column.get("type", "string"),
                "format": column.get("format", ""),
                "description": column.get("description", ""),
                "priority": column.get("priority", 0),
            }
            result.append((definition, _custom_cell(column)))
        return result
    return [(_name_column(), _name_cell), *_BUILTIN_COLUMNS.get(rt.key, []), (_age_column(), _age)]


def _name_cell(obj: dict[str, Any], now: datetime.datetime) -> Any:
    return (obj.get("metadata") or {}).get("name")


def to_table(
    rt: ResourceType, items: list[dict[str, Any]], list_meta: dict[str, Any], include_object: str = "Metadata"
) -> dict[str, Any]:
    now = datetime.datetime.now(tz=datetime.UTC)
    columns = columns_for(rt)
    rows = []
    for obj in items:
        row: dict[str, Any] = {"cells": [cell(obj, now) for _, cell in columns]}
        if include_object == "Object":
            row["object"] = obj
        elif include_object != "None":
            row["object"] = {
                "kind": "PartialObjectMetadata",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": obj.get("metadata") or {},
            }
        rows.append(row)
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": list_meta,
        "columnDefinitions": [definition for definition, _ in columns],
        "rows": rows,
    }
