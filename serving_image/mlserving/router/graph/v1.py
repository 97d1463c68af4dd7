"""KServe V1 in front of a graph: ``{"instances": [row, ...]}`` in, ``{"predictions": [...]}`` out.

A V1 request names no tensor, so it fits graphs with one input (named and typed from the graph's
metadata); the predictions are the rows of the graph's first output.
"""

from __future__ import annotations

import math
from typing import Any

from mlserving.request_checks import v1_rows
from mlserving.router.graph.request import RequestError
from mlserving.router.graph.tensors import Tensor, flat_data

MAX_DIMENSIONS = 16


def v2_request(document: Any, inputs: list[dict[str, Any]], graph: str) -> dict[str, Any]:
    """The V2 request of a V1 one; ``RequestError`` names the field."""
    key, rows = v1_rows(document)
    if len(inputs) != 1:
        names = ", ".join(str(i.get("name")) for i in inputs)
        raise RequestError(
            f"V1 predict needs a single-input graph; {graph!r} has {len(inputs)} inputs ({names}): use V2"
        )
    spec = inputs[0]
    shape = _shape(rows, key)
    data = _flat(rows)
    if len(shape) == 1 and len(spec["shape"]) == 2:
        shape = [len(rows), 1] if spec["shape"][1] == 1 else [1, len(rows)]
    request: dict[str, Any] = {
        "inputs": [{"name": spec["name"], "datatype": spec["datatype"], "shape": shape, "data": data}]
    }
    if isinstance(document.get("id"), str):
        request["id"] = document["id"]
    return request


def predictions(outputs: list[Tensor]) -> list[Any]:
    """The first output's values, nested by its shape (one entry per row)."""
    if not outputs:
        return []
    tensor = outputs[0]
    shape = [d for d in tensor.get("shape") or [] if isinstance(d, int)]
    values = flat_data(tensor)
    if len(shape) <= 1 or math.prod(shape) != len(values):
        return values
    return _nest(values, shape)


def _shape(rows: list[Any], key: str, depth: int = 1) -> list[int]:
    """The shape of rectangular nested lists; 400 when rows differ."""
    if depth > MAX_DIMENSIONS:
        raise RequestError(f"{key} is nested deeper than {MAX_DIMENSIONS} levels")
    first = rows[0]
    inner = _shape(first, f"{key}[0]", depth + 1) if isinstance(first, list) and first else []
    for index, row in enumerate(rows):
        row_shape = _shape(row, f"{key}[{index}]", depth + 1) if isinstance(row, list) and row else []
        if isinstance(row, list) != isinstance(first, list) or row_shape != inner:
            raise RequestError(f"{key}[{index}] has another shape than {key}[0]: rows must all be alike")
    return [len(rows), *inner]


def _flat(rows: list[Any]) -> list[Any]:
    flat: list[Any] = []
    for row in rows:
        if isinstance(row, list):
            flat.extend(_flat(row))
        else:
            flat.append(row)
    return flat


def _nest(values: list[Any], shape: list[int]) -> list[Any]:
    if len(shape) == 1:
        return values
    size = math.prod(shape[1:])
    return [_nest(values[i * size : (i + 1) * size], shape[1:]) for i in range(shape[0])]
