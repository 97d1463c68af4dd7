"""Open Inference Protocol tensors as decoded JSON: ``{"name", "datatype", "shape", "data"}`` dicts.

The graph only looks inside a tensor to combine, test or split rows, so tensors stay the dicts and
lists JSON gives; ``data`` may be flat (row-major) or nested, as the protocol allows.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable
from typing import Any

Tensor = dict[str, Any]

MAX_NESTING = 32
"""Nested ``data`` deeper than this is refused: no tensor has that many dimensions."""

FLOATS = frozenset({"FP16", "FP32", "FP64"})
INTEGERS = frozenset({"INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64"})
NUMBERS = FLOATS | INTEGERS | {"BOOL"}
COMPARISONS: dict[str, Callable[[Any, Any], bool]] = {
    "eq": operator.eq, "ne": operator.ne, "lt": operator.lt,
    "le": operator.le, "gt": operator.gt, "ge": operator.ge,
}  # fmt: skip


class TensorError(ValueError):
    """A tensor that does not fit what the graph does with it; the message names the tensor."""


def flat_data(tensor: Tensor) -> list[Any]:
    """The elements in row-major order (nested lists flattened); ``TensorError`` when absurdly deep."""
    data: list[Any] = tensor["data"]
    if not data or not isinstance(data[0], list):
        return data
    out: list[Any] = []
    _flatten(data, out)
    return out


def _flatten(data: list[Any], out: list[Any], depth: int = 1) -> None:
    if depth > MAX_NESTING:
        raise TensorError(f"data is nested deeper than {MAX_NESTING} levels")
    for item in data:
        if isinstance(item, list):
            _flatten(item, out, depth + 1)
        else:
            out.append(item)


def rows(tensor: Tensor) -> int:
    """The batch size: the first dimension (a scalar tensor is one row)."""
    shape = tensor["shape"]
    return shape[0] if shape else 1


def row_size(tensor: Tensor) -> int:
    return math.prod(tensor["shape"][1:])


def batch_rows(tensors: list[Tensor]) -> int:
    """Rows of a list of tensors (the first one's, which the components check against the others)."""
    return rows(tensors[0]) if tensors else 1


def checked_flat(tensor: Tensor, where: str) -> list[Any]:
    try:
        data = flat_data(tensor)
    except TensorError as exc:
        raise TensorError(f"{where}: {exc}") from None
    expected = math.prod(tensor["shape"])
    if len(data) != expected:
        raise TensorError(f"{where}: shape {tensor['shape']} needs {expected} values, data has {len(data)}")
    return data


def take_rows(tensor: Tensor, indices: list[int], where: str) -> Tensor:
    """A tensor of the given rows, in that order."""
    data = checked_flat(tensor, where)
    size = row_size(tensor)
    picked: list[Any] = []
    for row in indices:
        picked.extend(data[row * size : (row + 1) * size])
    return {**tensor, "shape": [len(indices), *tensor["shape"][1:]], "data": picked}


def scatter_rows(parts: list[tuple[list[int], Tensor]], total_rows: int, where: str) -> Tensor:
    """Reassemble one tensor from parts that each hold the rows at the given indices."""
    first = parts[0][1]
    row_shape = first["shape"][1:]
    size = math.prod(row_shape)
    datatype = common_datatype([tensor["datatype"] for _, tensor in parts], where)
    data: list[Any] = [None] * (total_rows * size)
    for indices, tensor in parts:
        if tensor["shape"][1:] != row_shape or rows(tensor) != len(indices):
            raise TensorError(
                f"{where}: shape {tensor['shape']} does not fit {len(indices)} rows of shape {row_shape}"
            )
        values = checked_flat(tensor, where)
        for position, row in enumerate(indices):
            data[row * size : (row + 1) * size] = values[position * size : (position + 1) * size]
    return {"name": first["name"], "datatype": datatype, "shape": [total_rows, *row_shape], "data": data}


def common_datatype(datatypes: list[str], where: str) -> str:
    """The one datatype of several tensors: the same one, else INT64 for integers, else FP64."""
    first = datatypes[0]
    if all(d == first for d in datatypes):
        return first
    if all(d in INTEGERS for d in datatypes):
        return "INT64"
    if all(d in NUMBERS for d in datatypes):
        return "FP64"
    raise TensorError(f"{where}: cannot mix datatypes {sorted(set(datatypes))}")


def repeated(name: str, datatype: str, value: Any, count: int) -> Tensor:
    """``value`` (one row: a scalar or a list) repeated for ``count`` rows."""
    if isinstance(value, list):
        return {"name": name, "datatype": datatype, "shape": [count, len(value)], "data": value * count}
    return {"name": name, "datatype": datatype, "shape": [count], "data": [value] * count}
