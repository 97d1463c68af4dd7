"""An online learner over a scikit-learn estimator that has ``partial_fit``.

Rows are learned in seq order (the order of the data log), in batches of ``batch_size``. Before
each ``partial_fit`` the batch is predicted by the model as it is and scored (prequential
metrics). The classes of a classifier are those of the initial model, fixed at its first fit: a
label of another class is refused with the field named.

The learner state (estimator, counters, metric window) is what a snapshot stores to resume from;
rows after ``learned_seq`` are not in it and are replayed from the data log.
"""

from __future__ import annotations

import copy
import logging
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mlserving.learning.prequential import Prequential
from mlserving.learning.records import LoggedRequest, RecordError, labels_per_row

log = logging.getLogger(__name__)

STATE_FORMAT = 1

# Estimators known to learn online; any other with partial_fit is accepted too.
ONLINE_ESTIMATORS = (
    "SGDClassifier",
    "SGDRegressor",
    "PassiveAggressiveClassifier",
    "PassiveAggressiveRegressor",
    "Perceptron",
    "MultinomialNB",
    "BernoulliNB",
    "MLPClassifier",
    "MLPRegressor",
)


class LearnerError(ValueError):
    """The model cannot learn online; the message names the field and says why."""


def load_initial_model(path: Path, *, allow_unsafe_pickle: bool, trusted_types: Sequence[str]) -> Any:
    """The estimator of ``spec.model``: a skops file (joblib/pickle only when explicitly allowed)."""
    from mlserving.runtimes import resolve_model_file
    from mlserving.runtimes.sklearn import load_estimator

    model_file = resolve_model_file(path)
    if model_file.suffix.lower() == ".onnx":
        raise LearnerError(
            f"model: {model_file.name} is an ONNX model, which cannot learn; online learning starts "
            "from a scikit-learn estimator saved with skops"
        )
    return load_estimator(model_file, allow_unsafe_pickle=allow_unsafe_pickle, trusted_types=trusted_types)


def set_params(estimator: Any, params: dict[str, Any]) -> None:
    """Set ``params`` on the initial model (e.g. a constant learning rate for online updates)."""
    if not params:
        return
    valid = estimator.get_params(deep=False) if callable(getattr(estimator, "get_params", None)) else {}
    unknown = sorted(set(params) - set(valid))
    if unknown:
        raise LearnerError(
            f"params.{unknown[0]}: {type(estimator).__name__} has no such parameter "
            f"(it has {', '.join(sorted(valid))})"
        )
    try:
        estimator.set_params(**params)
    except (TypeError, ValueError) as exc:
        raise LearnerError(f"params: {type(estimator).__name__} refuses them: {exc}") from None
    try:
        # scikit-learn checks parameter values when it fits; check them now, not at the first batch
        estimator._validate_params()
    except AttributeError:
        pass
    except (TypeError, ValueError) as exc:
        raise LearnerError(f"params: {exc}") from None


def check_learnable(estimator: Any, algorithm: str | None = None) -> None:
    """Refuse an estimator that cannot learn online, is not fitted, or is not the expected algorithm."""
    name = type(estimator).__name__
    if algorithm and name != algorithm:
        raise LearnerError(f"algorithm: the model is a {name}, not the configured {algorithm}")
    if not callable(getattr(estimator, "partial_fit", None)):
        raise LearnerError(
            f"model: {name} has no partial_fit, so it cannot learn online; "
            f"use one of {', '.join(ONLINE_ESTIMATORS)}"
        )
    from sklearn.exceptions import NotFittedError
    from sklearn.utils.validation import check_is_fitted

    try:
        check_is_fitted(estimator)
    except NotFittedError:
        raise LearnerError(
            f"model: {name} is not fitted; the initial model is served before it learns, so fit it "
            "on some data first"
        ) from None
    if not isinstance(getattr(estimator, "n_features_in_", None), int | np.integer):
        raise LearnerError(f"model: {name} has no n_features_in_ (fit it on a numeric feature matrix)")
    # A classifier's n_outputs_ may count output units (MLPClassifier); its classes_ tell.
    if hasattr(estimator, "classes_"):
        several_outputs = np.ndim(estimator.classes_) != 1
    else:
        several_outputs = int(getattr(estimator, "n_outputs_", 1)) > 1
    if several_outputs:
        raise LearnerError(f"model: {name} predicts several outputs; online learning takes one target")


@dataclass(frozen=True)
class LearnerCapture:
    """A consistent copy of the learner at one moment, for a snapshot."""

    estimator: Any
    state: dict[str, Any]
    samples: int
    learned_seq: int
    lineage_start: int
    data_version: int | None
    metrics: dict[str, float]


class OnlineLearner:
    def __init__(
        self, estimator: Any, *, batch_size: int = 32, window: int = 500, learned_seq: int = 0
    ) -> None:
        check_learnable(estimator)
        if batch_size < 1:
            raise LearnerError(f"batch_size: must be at least 1, got {batch_size}")
        self.estimator = estimator
        self.batch_size = int(batch_size)
        self.classes: np.ndarray | None = (
            np.asarray(estimator.classes_) if hasattr(estimator, "classes_") else None
        )
        self.n_features = int(estimator.n_features_in_)
        self.prequential = Prequential(window, classifier=self.is_classifier)
        self.samples = 0
        self.learned_seq = int(learned_seq)
        self.lineage_start = int(learned_seq)
        self.data_version: int | None = None
        self.errors = 0
        self.last_error = ""
        self.metrics: dict[str, float] = {}
        self._has_proba = self.is_classifier and hasattr(estimator, "predict_proba")
        self._pending = _PendingRows(self.n_features)
        self._classes_by_key = _class_lookup(self.classes) if self.classes is not None else {}

    @property
    def is_classifier(self) -> bool:
        return self.classes is not None

    @property
    def label_kind(self) -> str:
        """The label's column type in the data log: int, float, bool or string."""
        if self.classes is None:
            return "float"
        return {"i": "int", "u": "int", "f": "float", "b": "bool"}.get(self.classes.dtype.kind, "string")

    @property
    def pending(self) -> int:
        return len(self._pending)

    # ---------------------------------------------------------------- labels

    def check_labels(self, label: Any, request: LoggedRequest, field: str = "label") -> tuple[Any, ...]:
        """One label per row of ``request``, coerced to the model's classes (or a float)."""
        values = labels_per_row(label, rows=request.rows, field=field)
        if len(values) == 1:
            return (self._coerce(values[0], field),)
        return tuple(self._coerce(v, f"{field}[{i}]") for i, v in enumerate(values))

    def _coerce(self, value: Any, field: str) -> Any:
        if self.classes is None:
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise RecordError(f"{field}: a regression model needs a finite number, got {value!r}")
            return float(value)
        key = _label_key(value, self.classes.dtype.kind)
        if key is None or key not in self._classes_by_key:
            shown = ", ".join(repr(c) for c in self.classes.tolist()[:20])
            more = ", ..." if len(self.classes) > 20 else ""
            raise RecordError(
                f"{field}: {value!r} is not one of the model's classes [{shown}{more}]; "
                "the classes are fixed when the model is first fitted"
            )
        return self._classes_by_key[key]

    # ---------------------------------------------------------------- learning

    def add(self, features: np.ndarray, labels: Sequence[Any], seqs: np.ndarray, data_version: int) -> None:
        """Queue rows (in seq order) for learning; ``step`` learns them."""
        self._pending.add(features, self._label_array(labels), seqs, data_version)

    def _label_array(self, labels: Sequence[Any]) -> np.ndarray:
        if self.classes is None:
            return np.asarray(labels, dtype=np.float64)
        kind = self.classes.dtype.kind
        return np.asarray(labels, dtype=self.classes.dtype if kind in "iufb" else object)

    def step(self, max_samples: int | None = None) -> int:
        """Learn whole batches from the queued rows, stopping once ``max_samples`` are learned."""
        learned = 0
        with warnings.catch_warnings():
            # Feature-name and convergence notices repeat on every batch and say nothing new.
            warnings.simplefilter("ignore")
            while len(self._pending) >= self.batch_size and (max_samples is None or learned < max_samples):
                x, y, seqs, versions = self._pending.take(self.batch_size)
                self._learn_batch(x, y)
                self.learned_seq = int(seqs[-1]) + 1
                self.data_version = int(versions[-1])
                learned += len(y)
        if learned:
            self.samples += learned
            self.metrics = self.prequential.values()
        return learned

    def _learn_batch(self, x: np.ndarray, y: np.ndarray) -> None:
        estimator = self.estimator
        try:
            if self.classes is not None:
                if self._has_proba:
                    proba = estimator.predict_proba(x)
                    self.prequential.update_classification(
                        y, self.classes[np.argmax(proba, axis=1)], proba, self.classes
                    )
                else:
                    self.prequential.update_classification(y, estimator.predict(x), None, self.classes)
                estimator.partial_fit(x, y, classes=self.classes)
            else:
                self.prequential.update_regression(y, estimator.predict(x))
                estimator.partial_fit(x, y)
        except (ValueError, TypeError, ArithmeticError) as exc:
            # One bad batch (e.g. negative counts for MultinomialNB) must not stop learning.
            self.errors += 1
            self.last_error = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            log.warning("partial_fit failed on a batch of %d rows: %s", len(y), self.last_error)

    # ---------------------------------------------------------------- snapshots

    def capture(self) -> LearnerCapture:
        estimator = copy.deepcopy(self.estimator)
        state = {
            "format": STATE_FORMAT,
            "estimator": estimator,
            "samples": self.samples,
            "learned_seq": self.learned_seq,
            "lineage_start": self.lineage_start,
            "data_version": -1 if self.data_version is None else self.data_version,
            "errors": self.errors,
            "prequential": self.prequential.state(),
        }
        return LearnerCapture(
            estimator=estimator,
            state=state,
            samples=self.samples,
            learned_seq=self.learned_seq,
            lineage_start=self.lineage_start,
            data_version=self.data_version,
            metrics=dict(self.metrics),
        )

    @classmethod
    def from_state(cls, state: dict[str, Any], *, batch_size: int, window: int) -> OnlineLearner:
        if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
            raise LearnerError(
                f"learner state: unknown format {state.get('format')!r}; expected {STATE_FORMAT}"
            )
        learner = cls(
            state["estimator"], batch_size=batch_size, window=window, learned_seq=int(state["learned_seq"])
        )
        learner.lineage_start = int(state["lineage_start"])
        learner.samples = int(state["samples"])
        version = int(state["data_version"])
        learner.data_version = None if version < 0 else version
        learner.errors = int(state["errors"])
        learner.prequential = Prequential.from_state(state["prequential"], window=window)
        learner.metrics = learner.prequential.values()
        return learner


def _class_lookup(classes: np.ndarray) -> dict[Any, Any]:
    kind = classes.dtype.kind
    return {_label_key(c, kind): c for c in classes.tolist()}


def _label_key(value: Any, kind: str) -> Any:
    """A key under which a JSON label and the model's class compare equal; None if it cannot."""
    if kind in "iuf":
        if isinstance(value, bool):
            return None
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                return None
        return float(value) if isinstance(value, int | float) and math.isfinite(value) else None
    if kind == "b":
        return value if isinstance(value, bool) else None
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


class _PendingRows:
    """Rows waiting to fill a batch, kept as a few arrays rather than many small ones."""

    def __init__(self, n_features: int) -> None:
        self._x: list[np.ndarray] = []
        self._y: list[np.ndarray] = []
        self._seq: list[np.ndarray] = []
        self._version: list[np.ndarray] = []
        self._n_features = n_features
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def add(self, features: np.ndarray, labels: np.ndarray, seqs: np.ndarray, data_version: int) -> None:
        n = len(seqs)
        if n == 0:
            return
        self._x.append(np.asarray(features, dtype=np.float64).reshape(n, self._n_features))
        self._y.append(labels)
        self._seq.append(np.asarray(seqs, dtype=np.int64))
        self._version.append(np.full(n, data_version, dtype=np.int64))
        self._count += n

    def take(self, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        if len(self._x) > 1:
            self._x = [np.concatenate(self._x)]
            self._y = [np.concatenate(self._y)]
            self._seq = [np.concatenate(self._seq)]
            self._version = [np.concatenate(self._version)]
        x, y, seq, version = self._x[0], self._y[0], self._seq[0], self._version[0]
        taken = (x[:n], y[:n], seq[:n], version[:n])
        if len(seq) > n:
            self._x, self._y, self._seq, self._version = [x[n:]], [y[n:]], [seq[n:]], [version[n:]]
        else:
            self._x, self._y, self._seq, self._version = [], [], [], []
        self._count -= len(taken[2])
        return taken
