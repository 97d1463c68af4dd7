"""The graph's own V2 inference request: checked as far as the graph relies on it.

Components check their inputs themselves; the graph only needs well-formed tensors to test, split
and combine rows, so a malformed request is refused before any component is called.
"""

from __future__ import annotations

import math
from typing import Any

import orjson

from mlserving.request_checks import ProtocolError, tensor_name
from mlserving.router.graph.tensors import Tensor, TensorError, flat_data

RequestError = ProtocolError
"""The graph's own request is malformed (400, naming the field): the model server's error, as the
checks of request tensors are the server's."""


def parse_request(body: bytes | dict[str, Any]) -> dict[str, Any]:
    """The decoded request, checked as far as the graph relies on it; RequestError names the field."""
    if isinstance(body, bytes | bytearray | memoryview):
        try:
            body = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise RequestError(f"request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise RequestError("request body must be a JSON object with an 'inputs' array")
    inputs = body.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise RequestError("'inputs' must be a non-empty array of tensors")
    seen: set[str] = set()
    for index, tensor in enumerate(inputs):
        _check_input(index, tensor, seen)
    if "id" in body and not isinstance(body["id"], str):
        raise RequestError("'id' must be a string")
    parameters = body.get("parameters")
    if parameters is not None and not isinstance(parameters, dict):
        raise RequestError("'parameters' must be an object")
    if parameters and parameters.get("binary_data_output"):
        raise RequestError("parameters.binary_data_output: graph responses are JSON only")
    return body


def _check_input(index: int, tensor: Any, seen: set[str]) -> None:
    where = f"inputs[{index}]"
    tensor_name(tensor, where, seen)
    if not isinstance(tensor.get("datatype"), str):
        raise RequestError(f"{where}.datatype must be a string such as FP32")
    shape = tensor.get("shape")
    if not isinstance(shape, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
    ):
        raise RequestError(f"{where}.shape must be an array of non-negative integers")
    data = tensor.get("data")
    if not isinstance(data, list):
        params = tensor.get("parameters")
        if isinstance(params, dict) and "binary_data_size" in params:
            raise RequestError(f"{where}: binary tensor data is not supported by graphs; send JSON data")
        raise RequestError(f"{where}.data must be an array")
    try:
        count = len(flat_data(tensor))
    except TensorError as exc:
        raise RequestError(f"{where}.{exc}") from None
    if count != math.prod(shape):
        raise RequestError(f"{where}: shape {shape} needs {math.prod(shape)} values, data has {count}")
    if shape and shape[0] > max(count, 1):
        # Rows without values would still be answered one by one (a Default output per row).
        raise RequestError(f"{where}: shape {shape} has {shape[0]} rows but no values in them")


def requested_outputs(outputs: list[Tensor], wanted: Any, graph: str) -> list[Tensor]:
    if wanted is None:
        return outputs
    if not isinstance(wanted, list):
        raise RequestError("'outputs' must be an array of {\"name\": ...} objects")
    by_name = {tensor["name"]: tensor for tensor in outputs}
    picked = []
    for index, item in enumerate(wanted):
        name = item.get("name") if isinstance(item, dict) else None
        if name not in by_name:
            raise RequestError(
                f"outputs[{index}].name {name!r} is not an output of graph {graph!r} "
                f"(outputs: {', '.join(by_name)})"
            )
        picked.append(by_name[name])
    return picked or outputs
