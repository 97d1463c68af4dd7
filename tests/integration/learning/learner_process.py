"""A real learner process (``python -m mlserving.learning``) on a loopback port, for the tests."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
from prometheus_client.parser import text_string_to_metric_families

from support import PYTHON, Proc, free_port, http_ok, wait_until

KEY = b"integration-signing-key-0123456789"


@dataclass
class Learner:
    proc: Proc
    url: str
    storage_uri: str

    def metric(self, name: str, **labels: str) -> float | None:
        text = httpx.get(f"{self.url}/metrics", timeout=5).text
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                    return sample.value
        return None

    def status(self) -> dict:
        return httpx.get(f"{self.url}/v1/status", timeout=5).json()


def train_initial_model(directory: Path) -> tuple[Path, np.ndarray, np.ndarray]:
    """An SGDClassifier fitted on 40 rows of the breast cancer data set (scaled), and the other rows."""
    import skops.io as sio
    from sklearn.datasets import load_breast_cancer
    from sklearn.linear_model import SGDClassifier

    x, y = load_breast_cancer(return_X_y=True)
    x = (x - x.mean(axis=0)) / x.std(axis=0)
    order = np.random.default_rng(0).permutation(len(y))
    x, y = x[order], y[order]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = SGDClassifier(loss="log_loss", alpha=0.01, random_state=0).fit(x[:40], y[:40])
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "model.skops"
    sio.dump(model, path)
    return path, x[40:], y[40:]


@contextlib.contextmanager
def learner_process(
    work: Path,
    model: Path,
    storage_uri: str,
    *,
    extra: Sequence[str] = (),
    env: dict[str, str] | None = None,
    port: int | None = None,
) -> Iterator[Learner]:
    key_file = work / "signing-key"
    key_file.write_bytes(KEY + b"\n")
    port = port or free_port()
    argv = [
        PYTHON, "-m", "mlserving.learning",
        "--model-name", "cancer",
        "--model-uri", model.as_uri(),
        "--storage-uri", storage_uri,
        "--signing-key-file", str(key_file),
        "--host", "127.0.0.1",
        "--port", str(port),
        "--flush-interval", "0.02",
        *extra,
    ]  # fmt: skip
    proc = Proc(argv, work / f"learner-{port}.log", env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        try:
            wait_until(
                lambda: proc.alive() and http_ok(f"{url}/v2/health/ready"),
                timeout=60,
                message="learner ready",
            )
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n--- learner output ---\n{proc.output()[-4000:]}") from None
        yield Learner(proc, url, storage_uri)
    finally:
        proc.stop()


def send_logs(learner: Learner, x: np.ndarray, first: int, snapshot: int = 0) -> None:
    records = [
        {"id": f"req-{first + i}", "features": row.tolist(), "prediction": 0, "snapshot": snapshot}
        for i, row in enumerate(x)
    ]
    answer = httpx.post(f"{learner.url}/v1/log", json={"records": records}, timeout=10)
    assert answer.status_code == 200, answer.text
    assert answer.json()["rejected"] == []


def send_feedback(learner: Learner, y: np.ndarray, first: int) -> list[int]:
    """Feedback for ``req-<first>``...; returns the status of each answer."""
    import asyncio

    async def post_all() -> list[int]:
        async with httpx.AsyncClient(base_url=learner.url, timeout=15) as client:
            semaphore = asyncio.Semaphore(32)

            async def one(index: int, label: int) -> int:
                async with semaphore:
                    body = {"id": f"req-{first + index}", "label": label}
                    return (await client.post("/v2/models/cancer/feedback", json=body)).status_code

            return await asyncio.gather(*(one(i, int(v)) for i, v in enumerate(y)))

    return asyncio.run(post_all())
