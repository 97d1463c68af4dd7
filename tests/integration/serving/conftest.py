"""Real `mlserving serve` processes shared by the serving integration tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from support.models import (
    IrisModels,
    RunningServer,
    serving,
    train_iris_models,
    write_identity_model,
    write_two_input_model,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="session")
def iris(tmp_path_factory: pytest.TempPathFactory) -> IrisModels:
    return train_iris_models(tmp_path_factory.mktemp("iris"))


@pytest.fixture(scope="session")
def compile_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("compile-cache")


@pytest.fixture(scope="session")
def onnx_server(iris: IrisModels, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """The iris classifier as an ONNX file, model name ``iris``."""
    with serving(tmp_path_factory.mktemp("onnx-server"), iris.classifier_onnx, name="iris") as server:
        yield server


@pytest.fixture(scope="session")
def skops_server(
    iris: IrisModels, tmp_path_factory: pytest.TempPathFactory, compile_cache: Path
) -> Iterator[RunningServer]:
    """The iris classifier from a skops file (compiled to ONNX at load), model name ``iris``."""
    logs = tmp_path_factory.mktemp("skops-server")
    extra = ["--compile-cache-dir", str(compile_cache)]
    env = {"MLSERVING_MODEL": "iris-metrics", "MLSERVING_REVISION": "rev-a", "MLSERVING_ID_KEY": "k" * 32}
    with serving(logs, iris.classifier_skops, name="iris", extra=extra, env=env) as server:
        yield server


@pytest.fixture(scope="session")
def identity_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    base = tmp_path_factory.mktemp("identity")
    model = write_identity_model(base / "identity.onnx")
    with serving(base, model, name="identity") as server:
        yield server


@pytest.fixture(scope="session")
def two_input_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    base = tmp_path_factory.mktemp("two-inputs")
    model = write_two_input_model(base / "two.onnx")
    with serving(base, model, name="pair") as server:
        yield server


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=30.0) as c:
        yield c
