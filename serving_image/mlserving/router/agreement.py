"""Do a primary and a shadow prediction agree?

Outputs are compared element by element: classifier outputs (labels: integers, strings, booleans)
must be equal; floating-point outputs (regressors, scores) must be within a relative tolerance.
Both Open Inference Protocol V2 (``outputs[].data``) and V1 (``predictions``) bodies are understood.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import orjson


def _flatten(value: Any) -> Iterator[Any]:
    if isinstance(value, list):
        for item in value:
            yield from _flatten(item)
    else:
        yield value


def _values_agree(a: Any, b: Any, floating: bool, rel_tol: float) -> bool:
    if a == b:
        return True
    numeric = (int, float)
    if (
        isinstance(a, numeric)
        and isinstance(b, numeric)
        and not isinstance(a, bool)
        and not isinstance(b, bool)
        and (floating or isinstance(a, float) or isinstance(b, float))
    ):
        return math.isclose(a, b, rel_tol=rel_tol, abs_tol=1e-12)
    return False


def _sequences_agree(a: Any, b: Any, floating: bool, rel_tol: float) -> bool:
    left, right = list(_flatten(a)), list(_flatten(b))
    if len(left) != len(right):
        return False
    return all(_values_agree(x, y, floating, rel_tol) for x, y in zip(left, right, strict=True))


def _v2_outputs(body: dict[str, Any]) -> dict[str, tuple[bool, Any]] | None:
    outputs = body.get("outputs")
    if not isinstance(outputs, list):
        return None
    result: dict[str, tuple[bool, Any]] = {}
    for index, output in enumerate(outputs):
        if not isinstance(output, dict):
            return None
        name = output.get("name", str(index))
        floating = str(output.get("datatype", "")).upper().startswith("FP")
        result[str(name)] = (floating, output.get("data"))
    return result


def predictions_agree(primary: bytes, shadow: bytes, rel_tol: float) -> bool | None:
    """True/False when both bodies hold comparable predictions, None when they cannot be compared."""
    try:
        a, b = orjson.loads(primary), orjson.loads(shadow)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(a, dict) or not isinstance(b, dict):
        return None
    if "outputs" in a and "outputs" in b:
        out_a, out_b = _v2_outputs(a), _v2_outputs(b)
        if out_a is None or out_b is None:
            return None
        if set(out_a) != set(out_b):
            return False
        return all(
            _sequences_agree(out_a[name][1], out_b[name][1], out_a[name][0] or out_b[name][0], rel_tol)
            for name in out_a
        )
    if "predictions" in a and "predictions" in b:
        return _sequences_agree(a["predictions"], b["predictions"], False, rel_tol)
    return None
