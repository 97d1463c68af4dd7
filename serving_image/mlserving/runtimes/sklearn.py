"""scikit-learn models: safe loading (skops), compilation to ONNX, native fallback.

A skops file is loaded with skops' own audit; types outside skops' trusted set must be named
explicitly (``--trust-type``). joblib/pickle files can run arbitrary code while loading and are
refused unless the server is started with ``--allow-unsafe-pickle``.

At load, the estimator is converted to ONNX with skl2onnx and both are run on a probe batch; when
every output agrees within the tolerance the ONNX model is served (orders of magnitude less
overhead per call), otherwise the native estimator is served and the reason is logged and counted.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mlserving.runtimes.base import ModelLoadError, ModelRuntime, RuntimeInfo, Task, TensorSpec, datatype_of
from mlserving.runtimes.refusals import UntrustedTypesError

log = logging.getLogger(__name__)

PICKLE_SUFFIXES = (".joblib", ".pkl", ".pickle")
INPUT_NAME = "input"


class UntrustedSkopsTypes(ModelLoadError, UntrustedTypesError):
    """The skops file holds types that neither skops nor ``--trust-type`` trusts."""


def check_pickle_allowed(path: Path, allow_unsafe_pickle: bool) -> bool:
    """True for joblib/pickle files that may be loaded; ModelLoadError when they are refused."""
    if not (path.suffix.lower() in PICKLE_SUFFIXES or _looks_like_pickle(path)):
        return False
    if not allow_unsafe_pickle:
        raise ModelLoadError(
            f"{path.name}: refusing to load a joblib/pickle file, because unpickling can run arbitrary "
            "code from the file. Save the model with skops (skops.io.dump) instead, or start the server "
            "with --allow-unsafe-pickle (MLSERVING_ALLOW_UNSAFE_PICKLE=true) if you trust its source."
        )
    return True


def load_estimator(path: Path, *, allow_unsafe_pickle: bool, trusted_types: Sequence[str]) -> Any:
    """Load a scikit-learn estimator from a skops file, or from joblib/pickle when explicitly allowed."""
    if check_pickle_allowed(path, allow_unsafe_pickle):
        import joblib

        log.warning("loading %s with joblib (unsafe pickle explicitly allowed)", path.name)
        try:
            return joblib.load(path)
        except Exception as exc:
            raise ModelLoadError(f"{path.name}: cannot unpickle: {type(exc).__name__}: {exc}") from None
    import skops.io as sio
    from skops.io.exceptions import UntrustedTypesFoundException

    try:
        return sio.load(path, trusted=list(trusted_types) or None)
    except UntrustedTypesFoundException as exc:
        untrusted = sorted(set(sio.get_untrusted_types(file=path)) - set(trusted_types))
        raise UntrustedSkopsTypes(
            f"{path.name}: the skops file contains types that are not trusted by default: "
            f"{', '.join(untrusted)}. Review them and trust them explicitly with "
            f"--trust-type {' --trust-type '.join(untrusted)} (MLSERVING_TRUSTED_TYPES={','.join(untrusted)}). "
            f"skops says: {str(exc).splitlines()[0]}",
            untrusted,
        ) from None
    except Exception as exc:
        raise ModelLoadError(f"{path.name}: not a loadable skops file: {type(exc).__name__}: {exc}") from None


def _looks_like_pickle(path: Path) -> bool:
    with open(path, "rb") as fh:
        head = fh.read(2)
    return len(head) == 2 and head[0] == 0x80 and head[1] <= 5


def task_of(estimator: Any) -> Task:
    if hasattr(estimator, "classes_"):
        return "classification"
    if getattr(estimator, "_estimator_type", None) == "regressor" or hasattr(estimator, "predict"):
        return "regression"
    return "other"


def n_features(estimator: Any) -> int:
    count = getattr(estimator, "n_features_in_", None)
    if not isinstance(count, int | np.integer) or count <= 0:
        raise ModelLoadError(
            f"{type(estimator).__name__} has no n_features_in_: only fitted estimators on numeric "
            "feature matrices can be served"
        )
    return int(count)


class SklearnRuntime(ModelRuntime):
    """A scikit-learn estimator served natively (used when ONNX compilation is impossible or differs)."""

    blocking = True

    def __init__(self, estimator: Any, *, fallback_reason: str = "") -> None:
        super().__init__()
        self._estimator = estimator
        self._fallback_reason = fallback_reason

    def load(self) -> None:
        est = self._estimator
        features = n_features(est)
        task = task_of(est)
        outputs: list[TensorSpec] = []
        if task == "classification":
            classes = np.asarray(est.classes_)
            outputs.append(TensorSpec("label", datatype_of(classes.dtype), (-1,)))
            if hasattr(est, "predict_proba"):
                outputs.append(TensorSpec("probabilities", "FP64", (-1, len(classes))))
            primary = "label"
        else:
            probe = est.predict(np.zeros((1, features)))
            shape: tuple[int, ...] = (-1,) if np.ndim(probe) == 1 else (-1, int(np.shape(probe)[1]))
            outputs.append(TensorSpec("value", datatype_of(np.asarray(probe).dtype), shape))
            primary = "value"
        props = {"estimator": type(est).__name__, "served_by": "scikit-learn"}
        if self._fallback_reason:
            props["native_fallback_reason"] = self._fallback_reason
        self._info = RuntimeInfo(
            platform="sklearn",
            task=task,
            inputs=[TensorSpec(INPUT_NAME, "FP64", (-1, features))],
            outputs=outputs,
            primary_output=primary,
            properties=props,
        )
        self._ready = True

    def predict(
        self, inputs: Mapping[str, np.ndarray], outputs: Sequence[str] | None = None
    ) -> dict[str, np.ndarray]:
        x = inputs[INPUT_NAME]
        wanted = outputs or [o.name for o in self.info.outputs]
        result: dict[str, np.ndarray] = {}
        for name in wanted:
            if name == "label" or name == "value":
                value = np.asarray(self._estimator.predict(x))
                if value.dtype.kind in "US":
                    value = value.astype(object)
                result[name] = value
            elif name == "probabilities":
                result[name] = np.asarray(self._estimator.predict_proba(x), dtype=np.float64)
        return result


def probe_batch(features: int, rows: int = 256, seed: int = 0) -> np.ndarray:
    """Inputs on several scales (unit normal, wide normal, small integers) to reach many tree branches."""
    rng = np.random.default_rng(seed)
    third = rows // 3
    parts = [
        rng.normal(size=(third, features)),
        rng.normal(scale=100.0, size=(third, features)),
        rng.integers(0, 10, size=(rows - 2 * third, features)).astype(np.float64),
    ]
    return np.vstack(parts).astype(np.float32)


def compile_to_onnx(estimator: Any) -> bytes:
    """Convert with skl2onnx: float inputs named ``input``, raw probability matrix (no ZipMap)."""
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType

    features = n_features(estimator)
    options: dict[Any, Any] = {}
    if task_of(estimator) == "classification":
        options = {id(estimator): {"zipmap": False}}
    model = convert_sklearn(
        estimator, initial_types=[(INPUT_NAME, FloatTensorType([None, features]))], options=options
    )
    return bytes(model.SerializeToString())


def compare_outputs(estimator: Any, runtime: ModelRuntime, probe: np.ndarray, tolerance: float) -> str | None:
    """None when the compiled model matches the estimator on ``probe``; else what differs."""
    compiled = runtime.predict({INPUT_NAME: probe})
    if task_of(estimator) == "classification":
        want_label = np.asarray(estimator.predict(probe))
        got_label = compiled.get("label")
        if got_label is None:
            return "compiled model has no 'label' output"
        if hasattr(estimator, "predict_proba"):
            want_proba = np.asarray(estimator.predict_proba(probe))
            got_proba = compiled.get("probabilities")
            if got_proba is None or got_proba.shape != want_proba.shape:
                return "compiled model has no matching 'probabilities' output"
            diff = float(np.max(np.abs(got_proba - want_proba))) if want_proba.size else 0.0
            if diff > tolerance:
                return f"probabilities differ by {diff:.3g} > tolerance {tolerance:g}"
            # Labels may legitimately differ only where the top two probabilities tie.
            top2 = np.sort(want_proba, axis=1)[:, -2:] if want_proba.shape[1] > 1 else None
            ties = (top2[:, 1] - top2[:, 0] <= tolerance) if top2 is not None else np.zeros(len(probe), bool)
        else:
            ties = np.zeros(len(probe), bool)
        mismatch = (np.asarray(got_label).astype(str) != want_label.astype(str)) & ~ties
        if mismatch.any():
            return f"labels differ on {int(mismatch.sum())} of {len(probe)} probe rows"
        return None
    want = np.asarray(estimator.predict(probe), dtype=np.float64)
    got = compiled.get("value")
    if got is None:
        return "compiled model has no 'value' output"
    got = np.asarray(got, dtype=np.float64).reshape(want.shape)
    scale = max(1.0, float(np.max(np.abs(want)))) if want.size else 1.0
    diff = float(np.max(np.abs(got - want))) if want.size else 0.0
    if diff > tolerance * scale:
        return f"values differ by {diff:.3g} > tolerance {tolerance:g} x scale {scale:.3g}"
    return None
