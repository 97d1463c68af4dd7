"""Open Inference Protocol tensors: strict decoding of request inputs and encoding of outputs.

KServe V1 requests (rows of one input) are decoded into the same ``InferenceRequest``.

Every error is a ``ProtocolError`` whose message names the place in the request
(``inputs[0].shape``, ``inputs[1].data``) and what is wrong with it. Decoding never allocates more
than the request's declared shape, which itself is bounded by ``max_elements``.

Binary tensor data (the extension used by Triton clients: ``Inference-Header-Content-Length``)
is supported for inputs and outputs.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from typing import Any

import numpy as np

from mlserving.request_checks import ProtocolError, tensor_name, v1_rows
from mlserving.runtimes.base import DATATYPES, TensorSpec, datatype_of

MAX_RANK = 8
_FLOAT_MAX = {2: float(np.finfo(np.float16).max), 4: float(np.finfo(np.float32).max), 8: float("inf")}
_INT_KINDS = "iu"
_FLOAT_KINDS = "iuf"


@dataclass
class RequestTensor:
    name: str
    array: np.ndarray
    where: str


@dataclass
class InferenceRequest:
    id: str | None
    parameters: dict[str, Any] | None
    inputs: list[RequestTensor]
    outputs: list[str] | None
    binary_outputs: AbstractSet[str] = frozenset()
    all_binary: bool = False


def _shape_of(value: object, where: str, max_elements: int) -> tuple[list[int], int]:
    if not isinstance(value, list):
        raise ProtocolError(f"{where}.shape must be an array of non-negative integers")
    if len(value) > MAX_RANK:
        raise ProtocolError(f"{where}.shape has {len(value)} dimensions, more than {MAX_RANK}")
    count = 1
    for i, dim in enumerate(value):
        if not isinstance(dim, int) or isinstance(dim, bool) or dim < 0:
            raise ProtocolError(f"{where}.shape[{i}] must be a non-negative integer, got {dim!r}")
        count *= dim
    if count > max_elements:
        raise ProtocolError(
            f"{where}.shape {value} declares {count} elements, more than the limit of {max_elements}", 413
        )
    return value, count


def _flatten_strings(data: Any, where: str, out: list[Any]) -> None:
    for i, item in enumerate(data):
        if isinstance(item, list):
            _flatten_strings(item, where, out)
        elif isinstance(item, str):
            out.append(item)
        else:
            raise ProtocolError(f"{where}.data[{len(out)}]: BYTES elements must be strings, got {item!r:.40}")
        del i


def to_array(data: Any, datatype: str, where: str, allow_nan: bool, keep_shape: bool = False) -> np.ndarray:
    """Convert JSON ``data`` (flat or nested, row-major) to an array of ``datatype``, strict about kinds.

    The result is flat unless ``keep_shape`` (then nested lists give their dimensions; BYTES stay flat).
    """
    if not isinstance(data, list):
        data = [data]
    if datatype == "BYTES":
        strings: list[Any] = []
        _flatten_strings(data, where, strings)
        arr = np.empty(len(strings), dtype=object)
        arr[:] = strings
        return arr
    try:
        raw = np.asarray(data)
    except (ValueError, TypeError):
        raise ProtocolError(f"{where}.data is ragged: nested arrays must all have the same length") from None
    if raw.size == 0:
        return np.zeros(0, dtype=DATATYPES[datatype])
    kind = raw.dtype.kind
    target = DATATYPES[datatype]
    if datatype == "BOOL":
        if kind != "b":
            raise ProtocolError(f"{where}.data must hold booleans for datatype BOOL")
        return raw if keep_shape else raw.reshape(-1)
    if target.kind in "iu":
        if kind == "f" and datatype == "UINT64" and _all_integers(data):
            raw = _uint64_array(data, where)
        elif kind not in _INT_KINDS:
            raise ProtocolError(
                f"{where}.data must hold integers for datatype {datatype}, found {_kind_name(raw)}"
            )
        info = np.iinfo(target)
        lo, hi = raw.min(), raw.max()
        if lo < info.min or hi > info.max:
            raise ProtocolError(
                f"{where}.data has values outside the range of {datatype} [{info.min}, {info.max}]"
            )
        return (raw if keep_shape else raw.reshape(-1)).astype(target, copy=False)
    # Floating point.
    if kind not in _FLOAT_KINDS:
        raise ProtocolError(
            f"{where}.data must hold numbers for datatype {datatype}, found {_kind_name(raw)}"
        )
    flat = raw if keep_shape else raw.reshape(-1)
    # JSON numbers are always finite (the parser rejects NaN and Infinity); only a narrowing cast
    # can overflow to Inf, so check the magnitude before casting to FP32/FP16.
    if target.itemsize < 8:
        limit = _FLOAT_MAX[target.itemsize]
        magnitude = np.abs(flat)
        if magnitude.max() > limit:
            if not allow_nan:
                bad = int(np.argmax(magnitude.reshape(-1) > limit))
                raise ProtocolError(
                    f"{where}.data[{bad}] is not a finite {datatype} number (NaN and Inf are not allowed)"
                )
            with np.errstate(over="ignore"):
                return flat.astype(target)
    return flat.astype(target, copy=False)


def _all_integers(data: list[Any]) -> bool:
    return all(
        _all_integers(item)
        if isinstance(item, list)
        else isinstance(item, int) and not isinstance(item, bool)
        for item in data
    )


def _uint64_array(data: list[Any], where: str) -> np.ndarray:
    """Integers beyond INT64 next to smaller ones, which numpy alone would read as float64."""
    try:
        return np.array(data, dtype=np.uint64)
    except OverflowError:
        info = np.iinfo(np.uint64)
        raise ProtocolError(
            f"{where}.data has values outside the range of UINT64 [{info.min}, {info.max}]"
        ) from None


def _kind_name(arr: np.ndarray) -> str:
    return {
        "b": "booleans",
        "f": "floating-point numbers",
        "U": "strings",
        "O": "mixed values or integers out of range",
    }.get(arr.dtype.kind, str(arr.dtype))


def _from_binary(chunk: bytes, datatype: str, where: str, count: int, allow_nan: bool) -> np.ndarray:
    if datatype == "BYTES":
        items: list[Any] = []
        offset = 0
        while offset < len(chunk):
            if offset + 4 > len(chunk):
                raise ProtocolError(f"{where}: truncated BYTES element length in binary data")
            (length,) = struct.unpack_from("<I", chunk, offset)
            offset += 4
            if offset + length > len(chunk):
                raise ProtocolError(f"{where}: BYTES element longer than the binary data")
            raw = chunk[offset : offset + length]
            offset += length
            try:
                items.append(raw.decode())
            except UnicodeDecodeError:
                items.append(raw)
        arr = np.empty(len(items), dtype=object)
        arr[:] = items
        return arr
    dtype = DATATYPES[datatype].newbyteorder("<")
    if len(chunk) != count * dtype.itemsize:
        raise ProtocolError(
            f"{where}: binary data has {len(chunk)} bytes, shape needs {count * dtype.itemsize} for {datatype}"
        )
    if datatype == "BOOL":
        arr = np.frombuffer(chunk, dtype=np.uint8).astype(bool)
    else:
        arr = np.frombuffer(chunk, dtype=dtype).astype(DATATYPES[datatype])
    if arr.dtype.kind == "f" and not allow_nan and not np.isfinite(arr).all():
        raise ProtocolError(f"{where}: binary data holds NaN or Inf, which are not allowed")
    return arr


def decode_request(
    body: Any,
    *,
    max_elements: int,
    allow_nan: bool,
    binary: bytes | None = None,
) -> InferenceRequest:
    """Validate a decoded V2 inference request (``binary``: the bytes after the JSON header)."""
    if not isinstance(body, dict):
        raise ProtocolError("request body must be a JSON object with an 'inputs' array")
    request_id = body.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise ProtocolError("'id' must be a string")
    if request_id is not None and len(request_id) > 256:
        raise ProtocolError("'id' is longer than 256 characters")
    parameters = body.get("parameters")
    if parameters is not None and not isinstance(parameters, dict):
        raise ProtocolError("'parameters' must be an object")
    inputs = _decode_inputs(body.get("inputs"), max_elements, allow_nan, binary)
    raw_outputs = body.get("outputs")
    request = InferenceRequest(request_id, parameters, inputs, None)
    if raw_outputs is not None:
        _decode_outputs(raw_outputs, request)
    request.all_binary = bool(parameters and parameters.get("binary_data_output") is True)
    return request


def _decode_inputs(
    raw_inputs: Any, max_elements: int, allow_nan: bool, binary: bytes | None
) -> list[RequestTensor]:
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise ProtocolError("'inputs' must be a non-empty array of tensors")
    inputs: list[RequestTensor] = []
    seen: set[str] = set()
    total = 0
    offset = 0
    for i, item in enumerate(raw_inputs):
        where = f"inputs[{i}]"
        name = tensor_name(item, where, seen)
        datatype = item.get("datatype")
        if not isinstance(datatype, str) or datatype not in DATATYPES:
            raise ProtocolError(f"{where}.datatype {datatype!r} is not one of {', '.join(DATATYPES)}")
        shape, count = _shape_of(item.get("shape"), where, max_elements)
        total += count
        if total > max_elements:
            raise ProtocolError(f"inputs declare more than {max_elements} elements in total", 413)
        params = item.get("parameters")
        binary_size = params.get("binary_data_size") if isinstance(params, dict) else None
        if binary_size is not None:
            arr = _binary_input(binary, offset, binary_size, datatype, where, count, allow_nan)
            offset += binary_size
        else:
            if "data" not in item:
                raise ProtocolError(f"{where}.data is required")
            arr = to_array(item["data"], datatype, where, allow_nan)
        if arr.size != count:
            raise ProtocolError(f"{where}: shape {shape} needs {count} values, data has {arr.size}")
        inputs.append(RequestTensor(name, arr.reshape(shape), where))
    return inputs


def _binary_input(
    binary: bytes | None, offset: int, size: Any, datatype: str, where: str, count: int, allow_nan: bool
) -> np.ndarray:
    if binary is None or not isinstance(size, int) or size < 0:
        raise ProtocolError(f"{where}.parameters.binary_data_size needs binary data after the JSON header")
    if offset + size > len(binary):
        raise ProtocolError(f"{where}.parameters.binary_data_size {size} runs past the request body")
    return _from_binary(binary[offset : offset + size], datatype, where, count, allow_nan)


def _decode_outputs(raw_outputs: Any, request: InferenceRequest) -> None:
    """The requested outputs (none: all of them), and those asked for as binary data."""
    if not isinstance(raw_outputs, list):
        raise ProtocolError("'outputs' must be an array of {\"name\": ...} objects")
    outputs: list[str] = []
    binary_outputs: set[str] = set()
    for i, item in enumerate(raw_outputs):
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise ProtocolError(f"outputs[{i}] must be an object with a string 'name'")
        if item["name"] in outputs:
            raise ProtocolError(f"outputs[{i}].name {item['name']!r} appears more than once")
        outputs.append(item["name"])
        params = item.get("parameters")
        if isinstance(params, dict) and params.get("binary_data") is True:
            binary_outputs.add(item["name"])
    request.outputs = outputs or None
    request.binary_outputs = binary_outputs


def decode_v1_request(
    document: Any,
    inputs: Sequence[TensorSpec],
    output: str,
    model_name: str,
    *,
    max_elements: int,
    allow_nan: bool,
) -> InferenceRequest:
    """A KServe V1 request (``{"instances": [row, ...]}``, or ``"inputs"``) for a single-input model,
    asking for ``output``. Floating-point rows are parsed as FP64 and cast when bound to the input."""
    key, rows = v1_rows(document)
    if len(inputs) != 1:
        raise ProtocolError(f"V1 predict needs a single-input model; {model_name!r} has {len(inputs)}")
    spec = inputs[0]
    if len(rows) * (spec.shape[-1] if spec.shape and spec.shape[-1] > 0 else 1) > max_elements:
        raise ProtocolError(f"{key} has more than {max_elements} values", 413)
    datatype = "FP64" if spec.datatype in ("FP16", "FP32") else spec.datatype
    array = to_array(rows, datatype, key, allow_nan, keep_shape=True)
    if array.ndim == 1 and len(rows) and isinstance(rows[0], list):
        array = array.reshape(len(rows), -1)
    elif array.ndim == 1 and len(spec.shape) == 2:
        array = array.reshape(-1, 1) if spec.shape[1] == 1 else array.reshape(1, -1)
    request_id = document.get("id")
    return InferenceRequest(
        request_id if isinstance(request_id, str) else None,
        None,
        [RequestTensor(spec.name, array, key)],
        [output],
    )


def encode_predictions(value: np.ndarray) -> list[Any]:
    """V1 ``predictions``: the output as nested lists, NaN and Inf as ``null`` (JSON has neither)."""
    predictions: list[Any] = value.tolist()
    if value.dtype.kind == "f" and not np.isfinite(value).all():
        predictions = [None if isinstance(v, float) and not math.isfinite(v) else v for v in predictions]
    return predictions


def bind_inputs(
    tensors: Sequence[RequestTensor], specs: Sequence[TensorSpec], model_name: str
) -> dict[str, np.ndarray]:
    """Match request tensors to the model's inputs by name, casting and reshaping where lossless."""
    by_name = {s.name: s for s in specs}
    bound: dict[str, np.ndarray] = {}
    for tensor in tensors:
        spec = by_name.get(tensor.name)
        if spec is None:
            raise ProtocolError(
                f"{tensor.where}.name {tensor.name!r} is not an input of model {model_name!r} "
                f"(inputs: {', '.join(by_name)})"
            )
        bound[spec.name] = _fit(tensor, spec)
    missing = [name for name in by_name if name not in bound]
    if missing:
        raise ProtocolError(f"missing input(s) {', '.join(missing)} of model {model_name!r}")
    return bound


def _fit(tensor: RequestTensor, spec: TensorSpec) -> np.ndarray:
    arr = tensor.array
    where = f"{tensor.where} ({tensor.name})"
    target = DATATYPES.get(spec.datatype)
    if target is None:
        raise ProtocolError(f"{where}: the model input has unsupported type {spec.datatype}", 400)
    if arr.dtype != target:
        arr = _cast(arr, target, spec.datatype, where)
    rank = len(spec.shape)
    if arr.ndim == rank - 1 and spec.shape[0] == -1:
        arr = arr.reshape((1, *arr.shape))  # one row sent without its batch dimension
    if arr.ndim != rank or any(
        want not in (-1, got) for want, got in zip(spec.shape, arr.shape, strict=True)
    ):
        raise ProtocolError(
            f"{where}: shape {list(tensor.array.shape)} does not fit the model input {list(spec.shape)}"
        )
    return arr


def _cast(arr: np.ndarray, target: np.dtype, datatype: str, where: str) -> np.ndarray:
    kind = arr.dtype.kind
    if target.kind == "O":
        raise ProtocolError(f"{where}: the model expects BYTES, got {datatype_of(arr.dtype)}")
    if kind == "O":
        if target.kind not in "fiu":
            raise ProtocolError(f"{where}: BYTES cannot be converted to {datatype}")
        try:
            parsed = np.array([float(x) for x in arr.ravel()], dtype=np.float64).reshape(arr.shape)
        except (TypeError, ValueError):
            raise ProtocolError(
                f"{where}: BYTES values are not numbers, the model expects {datatype}"
            ) from None
        if target.kind in "iu" and not np.all(parsed == np.round(parsed)):
            raise ProtocolError(f"{where}: BYTES values are not integers, the model expects {datatype}")
        if not np.isfinite(parsed).all():
            raise ProtocolError(f"{where}: BYTES values include NaN or Inf")
        return parsed.astype(target)
    if target.kind == "f":
        if target.itemsize < arr.dtype.itemsize or kind in "iu":
            limit = _FLOAT_MAX[target.itemsize]
            if arr.size and float(np.abs(arr).max()) > limit:
                raise ProtocolError(
                    f"{where}: values exceed the range of the model's {datatype} (max {limit:g})"
                )
        return arr.astype(target)
    if target.kind == "b":
        raise ProtocolError(f"{where}: the model expects BOOL, got {datatype_of(arr.dtype)}")
    if kind in "iub":
        if arr.size:
            info = np.iinfo(target)
            if arr.min() < info.min or arr.max() > info.max:
                raise ProtocolError(f"{where}: values do not fit the model's {datatype}")
        return arr.astype(target)
    raise ProtocolError(
        f"{where}: {datatype_of(arr.dtype)} cannot be converted to the model's {datatype} without loss"
    )


def encode_output(name: str, value: np.ndarray) -> dict[str, Any]:
    """A response tensor; ``data`` stays a numpy array for orjson (flat, row-major)."""
    datatype = datatype_of(value.dtype)
    if datatype == "BYTES":
        data: Any = [
            x.decode(errors="replace") if isinstance(x, bytes) else str(x) for x in value.ravel().tolist()
        ]
    else:
        data = np.ascontiguousarray(value).reshape(-1)
        if data.dtype.byteorder == ">":
            data = data.astype(data.dtype.newbyteorder("="))
    return {"name": name, "datatype": datatype, "shape": list(value.shape), "data": data}


def encode_binary(value: np.ndarray) -> bytes:
    if datatype_of(value.dtype) == "BYTES":
        parts = []
        for item in value.ravel().tolist():
            raw = item if isinstance(item, bytes) else str(item).encode()
            parts.append(struct.pack("<I", len(raw)) + raw)
        return b"".join(parts)
    if value.dtype == np.bool_:
        return value.astype(np.uint8).tobytes()
    return np.ascontiguousarray(value, dtype=value.dtype.newbyteorder("<")).tobytes()


def check_outputs(requested: Sequence[str] | None, available: Mapping[str, TensorSpec], model: str) -> None:
    if not requested:
        return
    for i, name in enumerate(requested):
        if name not in available:
            raise ProtocolError(
                f"outputs[{i}].name {name!r} is not an output of model {model!r} (outputs: {', '.join(available)})"
            )
