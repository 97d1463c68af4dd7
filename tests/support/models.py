"""Tiny models and a real `mlserving serve` process for tests.

    from support.models import train_iris_models, serving

    models = train_iris_models(tmp_path)              # skops, ONNX, joblib files of an iris classifier
    with serving(tmp_path, models.classifier_skops, name="iris") as server:
        httpx.post(f"{server.url}/v2/models/iris/infer", json=server.infer_body([[5.1, 3.5, 1.4, 0.2]]))

``serving`` starts the server on a free loopback port and waits until the model is ready (pass
``wait="live"`` to wait only for liveness, e.g. for models that must fail to load). Models train in
well under a second; a server with a compiled scikit-learn model is ready in 1-3 s.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from support import PYTHON, Proc, free_port, http_ok, wait_until

TREE_TYPE = "sklearn.tree._tree.Tree"


@dataclass(frozen=True)
class IrisModels:
    classifier_skops: Path  # LogisticRegression, skops (loads without extra trusted types)
    classifier_onnx: (
        Path  # the same classifier converted to ONNX (inputs "input", outputs label/probabilities)
    )
    classifier_joblib: Path  # the same classifier as joblib (refused unless --allow-unsafe-pickle)
    forest_skops: Path  # RandomForestClassifier (10 trees); needs --trust-type sklearn.tree._tree.Tree
    regressor_skops: Path  # Ridge on the diabetes data set (10 features), output "value"
    native_regressor_skops: Path  # KernelRidge: no ONNX converter, served natively
    features: np.ndarray  # a few iris rows (float64, 4 features)
    labels: np.ndarray  # their true labels


def train_iris_models(directory: Path) -> IrisModels:
    """Train the small models above into ``directory`` (deterministic)."""
    import joblib
    import skops.io as sio
    from sklearn.datasets import load_diabetes, load_iris
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.kernel_ridge import KernelRidge
    from sklearn.linear_model import LogisticRegression, Ridge

    directory.mkdir(parents=True, exist_ok=True)
    x, y = load_iris(return_X_y=True)
    classifier = LogisticRegression(max_iter=500).fit(x, y)
    forest = RandomForestClassifier(n_estimators=10, max_depth=4, random_state=0).fit(x, y)
    xd, yd = load_diabetes(return_X_y=True)
    regressor = Ridge().fit(xd, yd)
    native = KernelRidge(alpha=1.0).fit(xd[:200], yd[:200])

    paths = {
        "classifier_skops": directory / "iris-logreg.skops",
        "classifier_onnx": directory / "iris-logreg.onnx",
        "classifier_joblib": directory / "iris-logreg.joblib",
        "forest_skops": directory / "iris-forest.skops",
        "regressor_skops": directory / "diabetes-ridge.skops",
        "native_regressor_skops": directory / "diabetes-kernelridge.skops",
    }
    sio.dump(classifier, paths["classifier_skops"])
    sio.dump(forest, paths["forest_skops"])
    sio.dump(regressor, paths["regressor_skops"])
    sio.dump(native, paths["native_regressor_skops"])
    joblib.dump(classifier, paths["classifier_joblib"])
    paths["classifier_onnx"].write_bytes(sklearn_to_onnx(classifier))
    rows = x[[0, 50, 100, 1, 51, 101]]
    return IrisModels(**paths, features=rows, labels=y[[0, 50, 100, 1, 51, 101]])


def sklearn_to_onnx(estimator: object) -> bytes:
    """ONNX bytes of a fitted estimator with float input ``input`` and a plain probability matrix."""
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType

    options = {id(estimator): {"zipmap": False}} if hasattr(estimator, "classes_") else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = convert_sklearn(
            estimator,
            initial_types=[("input", FloatTensorType([None, estimator.n_features_in_]))],  # type: ignore[attr-defined]
            options=options,
        )
    return model.SerializeToString()


def train_forest(
    directory: Path, *, trees: int = 100, depth: int = 8, features: int = 20
) -> tuple[Path, Path]:
    """The benchmark forest (skops file, joblib file) on a synthetic binary classification set."""
    import joblib
    import skops.io as sio
    from sklearn.datasets import make_classification
    from sklearn.ensemble import RandomForestClassifier

    x, y = make_classification(n_samples=2000, n_features=features, n_informative=10, random_state=0)
    forest = RandomForestClassifier(n_estimators=trees, max_depth=depth, random_state=0).fit(x, y)
    directory.mkdir(parents=True, exist_ok=True)
    skops_path, joblib_path = directory / "forest.skops", directory / "forest.joblib"
    sio.dump(forest, skops_path)
    joblib.dump(forest, joblib_path)
    return skops_path, joblib_path


@dataclass
class RunningServer:
    proc: Proc
    url: str
    name: str

    def infer_body(self, rows: Sequence[Sequence[float]] | np.ndarray, input_name: str = "input") -> dict:
        arr = np.asarray(rows, dtype=np.float64)
        return {
            "inputs": [
                {
                    "name": input_name,
                    "shape": list(arr.shape),
                    "datatype": "FP64",
                    "data": arr.ravel().tolist(),
                }
            ]
        }


def serve_argv(
    model_uri: str | Path, *, name: str = "model", port: int, extra: Sequence[str] = ()
) -> list[str]:
    uri = model_uri if isinstance(model_uri, str) else model_uri.as_uri()
    return [
        PYTHON,
        "-m",
        "mlserving.cli",
        "serve",
        "--model-name",
        name,
        "--model-uri",
        uri,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        *extra,
    ]


@contextlib.contextmanager
def serving(
    log_dir: Path,
    model_uri: str | Path,
    *,
    name: str = "model",
    extra: Sequence[str] = (),
    env: dict[str, str] | None = None,
    wait: str = "ready",
    timeout: float = 60.0,
) -> Iterator[RunningServer]:
    """Run `mlserving serve` as a real process; stop it (SIGTERM) on exit."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    full_env = {"MLSERVING_REVISION": "test", **(env or {})}
    full_env.setdefault("PYTHONUNBUFFERED", "1")
    log_path = log_dir / f"mlserving-{name}-{port}.log"
    proc = Proc(serve_argv(model_uri, name=name, port=port, extra=extra), log_path, env=full_env)
    probe = f"{url}/v2/health/{'ready' if wait == 'ready' else 'live'}"
    try:
        try:
            wait_until(
                lambda: proc.alive() and http_ok(probe), timeout=timeout, message=f"mlserving at {probe}"
            )
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n--- server output ---\n{proc.output()[-4000:]}") from None
        yield RunningServer(proc=proc, url=url, name=name)
    finally:
        proc.stop()


IDENTITY_DATATYPES = (
    "BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64", "FP16", "FP32", "FP64", "BYTES",
)  # fmt: skip


def write_identity_model(path: Path) -> Path:
    """ONNX model with one input per OIP datatype (``in_<type>``, shape [N, 3]) copied to ``out_<type>``."""
    import onnx
    from onnx import TensorProto, helper

    onnx_types = {
        "BOOL": TensorProto.BOOL,
        "UINT8": TensorProto.UINT8,
        "UINT16": TensorProto.UINT16,
        "UINT32": TensorProto.UINT32,
        "UINT64": TensorProto.UINT64,
        "INT8": TensorProto.INT8,
        "INT16": TensorProto.INT16,
        "INT32": TensorProto.INT32,
        "INT64": TensorProto.INT64,
        "FP16": TensorProto.FLOAT16,
        "FP32": TensorProto.FLOAT,
        "FP64": TensorProto.DOUBLE,
        "BYTES": TensorProto.STRING,
    }
    inputs, outputs, nodes = [], [], []
    for datatype in IDENTITY_DATATYPES:
        name = datatype.lower()
        inputs.append(helper.make_tensor_value_info(f"in_{name}", onnx_types[datatype], ["N", 3]))
        outputs.append(helper.make_tensor_value_info(f"out_{name}", onnx_types[datatype], ["N", 3]))
        nodes.append(helper.make_node("Identity", [f"in_{name}"], [f"out_{name}"]))
    graph = helper.make_graph(nodes, "identity", inputs, outputs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.write_bytes(model.SerializeToString())
    return path


def write_two_input_model(path: Path) -> Path:
    """ONNX model with inputs ``a`` and ``b`` (FP32 [N, 2]) and outputs ``sum`` and ``product``."""
    import onnx
    from onnx import TensorProto, helper

    f32 = TensorProto.FLOAT
    graph = helper.make_graph(
        [helper.make_node("Add", ["a", "b"], ["sum"]), helper.make_node("Mul", ["a", "b"], ["product"])],
        "two_inputs",
        [
            helper.make_tensor_value_info("a", f32, ["N", 2]),
            helper.make_tensor_value_info("b", f32, ["N", 2]),
        ],
        [
            helper.make_tensor_value_info("sum", f32, ["N", 2]),
            helper.make_tensor_value_info("product", f32, ["N", 2]),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.write_bytes(model.SerializeToString())
    return path


def metric_value(text: str, name: str, **labels: str) -> float | None:
    """The value of the first sample of ``name`` whose labels include ``labels`` (None if absent)."""
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(name + "{"):
            continue
        head, value = line.rsplit(" ", 1)
        if all(f'{k}="{v}"' in head for k, v in labels.items()):
            return float(value)
    return None
