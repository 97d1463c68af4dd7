"""The runtime interface every model format implements: ``load``, ``predict``, ``unload``, ``ready``."""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

Task = Literal["classification", "regression", "other"]

# Open Inference Protocol datatypes and their numpy dtypes (BYTES: str objects).
DATATYPES: dict[str, np.dtype] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
    "BYTES": np.dtype(object),
}


_BY_DTYPE: dict[np.dtype, str] = {dtype: name for name, dtype in DATATYPES.items() if name != "BYTES"}


def datatype_of(dtype: np.dtype) -> str:
    """The OIP datatype of a numpy dtype (strings and objects are BYTES)."""
    name = _BY_DTYPE.get(dtype)
    if name is not None:
        return name
    if dtype.kind in ("U", "S", "O"):
        return "BYTES"
    native = dtype.newbyteorder("=")
    if native in _BY_DTYPE:
        return _BY_DTYPE[native]
    raise ValueError(f"numpy dtype {dtype} has no Open Inference Protocol datatype")


@dataclass(frozen=True)
class TensorSpec:
    """Name, OIP datatype and shape of a model input or output (-1 marks a variable dimension)."""

    name: str
    datatype: str
    shape: tuple[int, ...]

    def as_metadata(self) -> dict[str, object]:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}


class ModelLoadError(RuntimeError):
    """A model file could not be loaded; the message says which file and why."""


@dataclass
class RuntimeInfo:
    """What a runtime tells the server about the model it serves."""

    platform: str
    task: Task
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    # Output whose values are counted in mlserving_predictions_total (label for classifiers).
    primary_output: str | None = None
    properties: dict[str, str] = field(default_factory=dict)


class ModelRuntime(abc.ABC):
    """A loaded model. ``predict`` takes and returns numpy arrays keyed by tensor name.

    ``blocking`` runtimes (slow per call, e.g. native scikit-learn) run in a worker thread; the others
    run on the event loop, where a call costs less than a thread hop. ``batchable`` runtimes accept any
    number of rows along axis 0 of every input and return outputs with the same number of rows.
    """

    blocking: bool = False
    batchable: bool = True

    def __init__(self) -> None:
        self._ready = False
        self._info: RuntimeInfo | None = None  # set by ``load``

    @property
    def ready(self) -> bool:
        return self._ready

    @property
    def info(self) -> RuntimeInfo:
        if self._info is None:
            raise RuntimeError("model not loaded")
        return self._info

    @abc.abstractmethod
    def load(self) -> None: ...

    @abc.abstractmethod
    def predict(
        self, inputs: Mapping[str, np.ndarray], outputs: Sequence[str] | None = None
    ) -> dict[str, np.ndarray]: ...

    def unload(self) -> None:
        self._ready = False
