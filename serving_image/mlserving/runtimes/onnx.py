"""ONNX models on onnxruntime, with session options tuned for low-latency serving."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from mlserving.runtimes.base import ModelLoadError, ModelRuntime, RuntimeInfo, Task, TensorSpec

log = logging.getLogger(__name__)

_ORT_TYPES = {
    "tensor(bool)": "BOOL",
    "tensor(uint8)": "UINT8",
    "tensor(uint16)": "UINT16",
    "tensor(uint32)": "UINT32",
    "tensor(uint64)": "UINT64",
    "tensor(int8)": "INT8",
    "tensor(int16)": "INT16",
    "tensor(int32)": "INT32",
    "tensor(int64)": "INT64",
    "tensor(float16)": "FP16",
    "tensor(float)": "FP32",
    "tensor(double)": "FP64",
    "tensor(string)": "BYTES",
}


def _shape(dims: Sequence[object]) -> tuple[int, ...]:
    return tuple(d if isinstance(d, int) and d >= 0 else -1 for d in dims)


class OnnxRuntime(ModelRuntime):
    """Serves an ONNX model (a file path or serialized bytes).

    ``rename`` maps graph output names to served names (``variable`` -> ``value`` for compiled
    regressors); ``squeeze`` lists served outputs of shape [N, 1] returned as [N].
    """

    def __init__(
        self,
        model: Path | bytes,
        *,
        intra_op_threads: int = 1,
        inter_op_threads: int = 1,
        task: Task | None = None,
        rename: Mapping[str, str] | None = None,
        squeeze: Sequence[str] = (),
        platform: str = "onnxruntime_onnx",
        properties: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__()
        self._model = model
        self._intra = intra_op_threads
        self._inter = inter_op_threads
        self._task = task
        self._rename = dict(rename or {})
        self._graph_name = {v: k for k, v in self._rename.items()}
        self._squeeze = frozenset(squeeze)
        self._platform = platform
        self._properties = dict(properties or {})
        self._session: object | None = None
        self._all_outputs: list[str] = []

    def load(self) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = self._intra
        opts.inter_op_num_threads = self._inter
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Spinning threads burn CPU between requests and steal it from the HTTP loop.
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        opts.add_session_config_entry("session.inter_op.allow_spinning", "0")
        opts.log_severity_level = 3
        # Tabular models allocate little per call: the arena would hold ~10 MB per session for no
        # measurable speed-up.
        opts.enable_cpu_mem_arena = False
        source = self._model if isinstance(self._model, bytes) else str(self._model)
        try:
            session = ort.InferenceSession(source, sess_options=opts, providers=["CPUExecutionProvider"])
        except Exception as exc:
            where = "compiled model" if isinstance(self._model, bytes) else str(self._model)
            raise ModelLoadError(f"{where}: not a valid ONNX model: {exc}") from None
        inputs = [
            TensorSpec(i.name, _ORT_TYPES.get(i.type, i.type), _shape(i.shape)) for i in session.get_inputs()
        ]
        outputs = []
        for o in session.get_outputs():
            name = self._rename.get(o.name, o.name)
            shape = _shape(o.shape)
            if name in self._squeeze and len(shape) == 2:
                shape = shape[:1]
            outputs.append(TensorSpec(name, _ORT_TYPES.get(o.type, o.type), shape))
        self._all_outputs = [o.name for o in session.get_outputs()]
        task = self._task or _guess_task(outputs)
        primary = _primary_output(task, outputs)
        meta = session.get_modelmeta()
        props = {"producer": meta.producer_name} if meta.producer_name else {}
        props.update(self._properties)
        self._info = RuntimeInfo(
            platform=self._platform,
            task=task,
            inputs=inputs,
            outputs=outputs,
            primary_output=primary,
            properties=props,
        )
        # Variable leading dimension on every input and output: requests can be merged.
        self.batchable = all(s.shape[:1] == (-1,) for s in inputs) and all(
            s.shape[:1] == (-1,) for s in outputs
        )
        if isinstance(self._model, bytes):
            self._model = b""  # the session holds its own copy
        # The binding's run() skips the Python wrapper's per-call feed checks (inputs are already
        # validated against the model's signature by the server); the public run() is the fallback.
        # Only the binding is kept: the Python wrapper holds a copy of the model's bytes (to rebuild
        # the session on a change of providers, which the server never asks for), as large as the
        # model file.
        inner = getattr(session, "_sess", None)
        if inner is not None and hasattr(inner, "run"):
            self._session, self._run = inner, inner.run
        else:
            self._session, self._run = session, session.run
        self._run_options = None
        self._ready = True

    def predict(
        self, inputs: Mapping[str, np.ndarray], outputs: Sequence[str] | None = None
    ) -> dict[str, np.ndarray]:
        graph_names = [self._graph_name.get(n, n) for n in outputs] if outputs else self._all_outputs
        results = self._run(graph_names, inputs, self._run_options)
        served: dict[str, np.ndarray] = {}
        for graph_name, value in zip(graph_names, results, strict=True):
            name = self._rename.get(graph_name, graph_name)
            if name in self._squeeze and value.ndim == 2 and value.shape[1] == 1:
                value = value.reshape(-1)
            served[name] = value
        return served

    def unload(self) -> None:
        self._session = None
        super().unload()


def _guess_task(outputs: Sequence[TensorSpec]) -> Task:
    names = {o.name for o in outputs}
    if "label" in names:
        return "classification"
    if "value" in names or "variable" in names:
        return "regression"
    return "other"


def _primary_output(task: Task, outputs: Sequence[TensorSpec]) -> str | None:
    """The output counted in the prediction distribution: label, value, or the first per-row scalar."""
    by_name = {o.name: o for o in outputs}
    for preferred in ("label", "value", "variable"):
        if preferred in by_name:
            return preferred
    for o in outputs:
        if len(o.shape) == 1 or (len(o.shape) == 2 and o.shape[1] == 1):
            return o.name
    return outputs[0].name if outputs else None
