"""Composite-model pieces for the router tests: tiny affine ONNX models, their servers, graph builders.

Every model maps ``input`` (FP32 [N, 2]) to ``value`` (FP32 [N, 2]) as ``x @ W + b``, with weights
that FP32 holds exactly, so a graph's answer can be checked against arithmetic done by hand:

- ``shift``:  value = x + [0.5, 0]
- ``double``: value = 2 x
- ``swap``:   value = [x1, x0] + [1, 1]
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from support import Proc, free_port, http_ok, wait_until
from support.models import serve_argv

AFFINE_MODELS: dict[str, tuple[list[list[float]], list[float]]] = {
    "shift": ([[1.0, 0.0], [0.0, 1.0]], [0.5, 0.0]),
    "double": ([[2.0, 0.0], [0.0, 2.0]], [0.0, 0.0]),
    "swap": ([[0.0, 1.0], [1.0, 0.0]], [1.0, 1.0]),
}


def by_hand(name: str, row: Sequence[float]) -> list[float]:
    """What model ``name`` answers for one row, by hand."""
    weights, bias = AFFINE_MODELS[name]
    return [sum(row[i] * weights[i][j] for i in range(len(row))) + bias[j] for j in range(len(bias))]


def write_affine_model(path: Path, weights: list[list[float]], bias: list[float]) -> Path:
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [helper.make_node("MatMul", ["input", "W"], ["xw"]), helper.make_node("Add", ["xw", "b"], ["value"])],
        "affine",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", len(weights)])],
        [helper.make_tensor_value_info("value", TensorProto.FLOAT, ["N", len(bias)])],
        initializer=[
            numpy_helper.from_array(np.asarray(weights, dtype=np.float32), "W"),
            numpy_helper.from_array(np.asarray(bias, dtype=np.float32), "b"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.write_bytes(model.SerializeToString())
    return path


@dataclass
class ModelServer:
    name: str  # the model name it serves
    url: str
    proc: Proc


@contextlib.contextmanager
def affine_servers(
    directory: Path, names: Sequence[str] = tuple(AFFINE_MODELS)
) -> Iterator[dict[str, ModelServer]]:
    """One real `mlserving serve` per model, started together, ready on exit from ``with``."""
    directory.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        servers = {}
        for name in names:
            weights, bias = AFFINE_MODELS[name]
            model = write_affine_model(directory / f"{name}.onnx", weights, bias)
            port = free_port()
            proc = Proc(
                serve_argv(model, name=name, port=port),
                directory / f"serve-{name}-{port}.log",
                env={"MLSERVING_REVISION": name, "PYTHONUNBUFFERED": "1"},
            )
            stack.callback(proc.stop)
            servers[name] = ModelServer(name, f"http://127.0.0.1:{port}", proc)
        for server in servers.values():
            ready = f"{server.url}/v2/health/ready"
            try:
                wait_until(lambda s=server, r=ready: s.proc.alive() and http_ok(r), timeout=90, message=ready)
            except AssertionError as exc:
                raise AssertionError(f"{exc}\n{server.proc.output()[-3000:]}") from None
        yield servers


# -- graph builders ----------------------------------------------------------------------------------


def model(name: str, upstream: str, served: str | None = None, **extra: Any) -> dict[str, Any]:
    return {"name": name, "type": "Model", "upstream": upstream, "model": served or name, **extra}


def ensemble(name: str, children: list[str], **combiner: Any) -> dict[str, Any]:
    return {"name": name, "type": "Ensemble", "children": children, "combiner": combiner or {"type": "mean"}}


def sequence(name: str, children: list[str], mappings: list[dict[str, str]] | None = None) -> dict[str, Any]:
    node: dict[str, Any] = {"name": name, "type": "Sequence", "children": children}
    if mappings is not None:
        node["mappings"] = mappings
    return node


def graph_route(
    name: str, root: str, *nodes: dict[str, Any], model_name: str | None = None, **graph: Any
) -> dict:
    return {"name": name, "model": model_name or name, "graph": {"root": root, "nodes": list(nodes), **graph}}


def rows_request(*rows: Sequence[float]) -> dict[str, Any]:
    return {
        "inputs": [
            {
                "name": "input",
                "datatype": "FP32",
                "shape": [len(rows), len(rows[0])],
                "data": [v for r in rows for v in r],
            }
        ]
    }


def value_rows(body: dict[str, Any], name: str = "value") -> list[list[float]]:
    tensor = next(t for t in body["outputs"] if t["name"] == name)
    width = tensor["shape"][1]
    return [tensor["data"][i : i + width] for i in range(0, len(tensor["data"]), width)]
