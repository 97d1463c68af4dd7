"""Ensemble combiners: element-wise merges of the children's output tensors.

Children answer tensors of the same shape; the combined tensor has that shape. Averages give FP32
when every child answered FP16/FP32 and FP64 otherwise; sum, max and min keep a shared datatype; a
vote keeps the labels' datatype (numbers or BYTES strings) and breaks ties towards the lowest label.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mlserving.router.graph.model import CombinerType
from mlserving.router.graph.tensors import (
    NUMBERS,
    Tensor,
    TensorError,
    checked_flat,
    common_datatype,
    row_size,
    rows,
)

_SMALL_FLOATS = frozenset({"FP16", "FP32"})


def select_outputs(
    ensemble: str, children: list[str], outputs: list[list[Tensor]], wanted: str | None
) -> list[tuple[str, list[Tensor]]]:
    """Which tensors to combine: (result name, one tensor per child).

    ``wanted`` picks one output by name; otherwise every name all children answer, in the first
    child's order; otherwise, when each child answers exactly one tensor, those, named after the ensemble.
    """
    if wanted is not None:
        picked = []
        for child, tensors in zip(children, outputs, strict=True):
            tensor = next((t for t in tensors if t.get("name") == wanted), None)
            if tensor is None:
                raise TensorError(
                    f"child {child!r} answered no output {wanted!r} (outputs: {_names(tensors)})"
                )
            picked.append(tensor)
        return [(wanted, picked)]
    by_child = [{t.get("name"): t for t in tensors} for tensors in outputs]
    shared = [t["name"] for t in outputs[0] if all(t.get("name") in named for named in by_child[1:])]
    if shared:
        return [(name, [named[name] for named in by_child]) for name in shared]
    if all(len(tensors) == 1 for tensors in outputs):
        return [(ensemble, [tensors[0] for tensors in outputs])]
    answered = "; ".join(f"{c}: {_names(t)}" for c, t in zip(children, outputs, strict=True))
    raise TensorError(f"children answer no output name in common ({answered}); set combiner.output")


def _names(tensors: list[Tensor]) -> str:
    return ", ".join(str(t.get("name")) for t in tensors) or "none"


def combine(
    kind: CombinerType,
    name: str,
    tensors: list[Tensor],
    weights: list[float] | None = None,
    bias: float = 0.0,
) -> Tensor:
    """One tensor from one tensor per child; ``weights`` align with ``tensors`` (weightedMean, linear)."""
    shape = tensors[0]["shape"]
    for tensor in tensors[1:]:
        if tensor["shape"] != shape:
            raise TensorError(
                f"output {name!r}: shapes differ between children: {shape} and {tensor['shape']}"
            )
    datatypes = [t["datatype"] for t in tensors]
    if kind != CombinerType.VOTE and not all(d in NUMBERS for d in datatypes):
        raise TensorError(f"output {name!r}: {kind.value} needs numbers, got {sorted(set(datatypes))}")
    datas = [checked_flat(t, f"output {name!r}") for t in tensors]
    if kind == CombinerType.VOTE:
        return _tensor(name, common_datatype(datatypes, f"output {name!r}"), shape, _vote(datas))
    if kind in _AVERAGES:
        datatype = "FP32" if all(d in _SMALL_FLOATS for d in datatypes) else "FP64"
        return _tensor(name, datatype, shape, _AVERAGES[kind](datas, weights, bias))
    datatype = common_datatype(datatypes, f"output {name!r}")
    if datatype == "BOOL" and kind == CombinerType.SUM:
        datatype = "INT64"
    return _tensor(name, datatype, shape, _ELEMENTWISE[kind](datas))


def _tensor(name: str, datatype: str, shape: list[int], data: list[Any]) -> Tensor:
    return {"name": name, "datatype": datatype, "shape": list(shape), "data": data}


def _mean(datas: list[list[Any]], _weights: list[float] | None, _bias: float) -> list[float]:
    count = len(datas)
    return [sum(column) / count for column in zip(*datas, strict=True)]


def _weighted_sum(datas: list[list[Any]], weights: list[float], bias: float) -> list[float]:
    first = weights[0]
    total = [first * x + bias for x in datas[0]]
    for weight, data in zip(weights[1:], datas[1:], strict=True):
        total = [t + weight * x for t, x in zip(total, data, strict=True)]
    return total


def _weighted_mean(datas: list[list[Any]], weights: list[float] | None, _bias: float) -> list[float]:
    assert weights is not None
    norm = sum(weights)
    return [value / norm for value in _weighted_sum(datas, weights, 0.0)]


def _linear(datas: list[list[Any]], weights: list[float] | None, bias: float) -> list[float]:
    assert weights is not None
    return _weighted_sum(datas, weights, bias)


def _vote(datas: list[list[Any]]) -> list[Any]:
    winners = []
    for column in zip(*datas, strict=True):
        counts: dict[Any, int] = {}
        for label in column:
            counts[label] = counts.get(label, 0) + 1
        top = max(counts.values())
        winners.append(min(label for label, count in counts.items() if count == top))
    return winners


_AVERAGES: dict[CombinerType, Callable[[list[list[Any]], list[float] | None, float], list[float]]] = {
    CombinerType.MEAN: _mean,
    CombinerType.WEIGHTED_MEAN: _weighted_mean,
    CombinerType.LINEAR: _linear,
}
_ELEMENTWISE: dict[CombinerType, Callable[[list[list[Any]]], list[Any]]] = {
    CombinerType.SUM: lambda datas: [sum(column) for column in zip(*datas, strict=True)],
    CombinerType.MAX: lambda datas: [max(column) for column in zip(*datas, strict=True)],
    CombinerType.MIN: lambda datas: [min(column) for column in zip(*datas, strict=True)],
}


def renormalised(kind: CombinerType, weights: list[float], kept: list[int]) -> list[float]:
    """The weights of the children that answered, when others were skipped.

    weightedMean divides by the sum of the weights used, so it only drops the others'. linear scales
    the remaining weights up to the same total magnitude, so a skipped child does not shrink the score.
    """
    remaining = [weights[i] for i in kept]
    if kind != CombinerType.LINEAR or len(kept) == len(weights):
        return remaining
    magnitude = sum(abs(w) for w in remaining)
    if magnitude == 0:
        return remaining
    scale = sum(abs(w) for w in weights) / magnitude
    return [w * scale for w in remaining]


def stack_input(name: str, selected: list[tuple[str, list[Tensor]]], children: list[str]) -> Tensor:
    """The input of a stacking model: per row, every child's selected outputs side by side, child by child."""
    columns: list[tuple[list[Any], int]] = []
    datatypes: list[str] = []
    count = None
    for child_index in range(len(children)):
        for output, tensors in selected:
            tensor = tensors[child_index]
            where = f"output {output!r} of child {children[child_index]!r}"
            if tensor["datatype"] not in NUMBERS:
                raise TensorError(f"{where}: a stack needs numbers, got {tensor['datatype']}")
            if count is None:
                count = rows(tensor)
            elif rows(tensor) != count:
                raise TensorError(f"{where}: has {rows(tensor)} rows, other outputs {count}")
            columns.append((checked_flat(tensor, where), row_size(tensor)))
            datatypes.append(tensor["datatype"])
    count = count or 0
    data: list[Any] = []
    for row in range(count):
        for values, size in columns:
            data.extend(values[row * size : (row + 1) * size])
    width = sum(size for _, size in columns)
    datatype = "FP32" if all(d == "FP32" for d in datatypes) else "FP64"
    return {"name": name, "datatype": datatype, "shape": [count, width], "data": data}
