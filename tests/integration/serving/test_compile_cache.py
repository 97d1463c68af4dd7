"""Replicas sharing a compile cache compile a model once: real `mlserving compile` and `mlserving
serve` processes, and a compile Job and serving pods of the process kubelet built with ``spec.model.compileCache``."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import httpx
import pytest

from mlrollouts.builders import Owner, ServingRevision, serving_deployment
from mlrollouts.builders.serving import COMPILE_CONTAINER, compile_job, compile_job_name, job_finished
from mlrollouts.local.apiserver.testing import apiserver, kubeconfig  # noqa: F401
from support import PYTHON, wait_until
from support.kubelet import running_kubelet
from support.models import TREE_TYPE, IrisModels, serving

pytestmark = pytest.mark.integration

COMPILED = "into the cache in"
ALREADY = "compiled model already in the cache"
SERVER_HIT = "taken from the cache"


def compile_command(model: Path, cache: Path) -> list[str]:
    return [
        str(PYTHON),
        "-m",
        "mlserving.cli",
        "compile",
        "--model-uri",
        str(model),
        "--trust-type",
        TREE_TYPE,
        "--compile-cache-dir",
        str(cache),
    ]


def test_two_replicas_starting_together_compile_once_and_serve_from_the_cache(
    iris: IrisModels, tmp_path, client
):
    cache = tmp_path / "cache"
    starts = [
        subprocess.Popen(
            compile_command(iris.forest_skops, cache),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [proc.communicate(timeout=120)[0] for proc in starts]
    assert [proc.returncode for proc in starts] == [0, 0], outputs
    assert sum(COMPILED in out for out in outputs) == 1, outputs
    assert sum(ALREADY in out for out in outputs) == 1, outputs
    entries = sorted(p.name for p in cache.iterdir() if not p.name.startswith("."))
    assert [Path(e).suffix for e in entries] == [".json", ".onnx"]  # one entry, no leftovers

    extra = ["--trust-type", TREE_TYPE, "--compile-cache-dir", str(cache)]
    with (
        serving(tmp_path, iris.forest_skops, name="forest", extra=extra) as first,
        serving(tmp_path, iris.forest_skops, name="forest", extra=extra) as second,
    ):
        for server in (first, second):
            assert SERVER_HIT in server.proc.output()
            assert "compiled to ONNX" not in server.proc.output()
            answer = client.post(
                f"{server.url}/v2/models/forest/infer", json=server.infer_body(iris.features)
            )
            assert answer.json()["outputs"][0]["data"] == iris.labels.tolist()


def test_a_model_that_cannot_compile_is_decided_once(iris: IrisModels, tmp_path, client):
    cache = tmp_path / "cache"
    first = subprocess.run(
        compile_command(iris.native_regressor_skops, cache),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert "not compiled (no ONNX conversion" in first.stderr
    [meta] = [json.loads(p.read_text()) for p in cache.glob("*.json")]
    assert meta["status"] == "fallback"
    with serving(
        tmp_path, iris.native_regressor_skops, name="kr", extra=["--compile-cache-dir", str(cache)]
    ) as s:
        assert client.get(f"{s.url}/v2/models/kr").json()["platform"] == "sklearn"
        assert "no ONNX conversion" in s.proc.output()
        assert "compiler process" not in s.proc.output()


def test_an_untrusted_model_is_left_to_the_server_by_a_best_effort_compile(iris: IrisModels, tmp_path):
    cache = tmp_path / "cache"
    command = [c for c in compile_command(iris.forest_skops, cache) if c not in ("--trust-type", TREE_TYPE)]
    strict = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert strict.returncode == 1 and "not trusted" in strict.stderr
    best_effort = subprocess.run([*command, "--best-effort"], capture_output=True, text=True, timeout=120)
    assert best_effort.returncode == 0 and "the server loads the model itself" in best_effort.stderr


@pytest.fixture
def kubelet(kubeconfig: Path, tmp_path: Path):  # noqa: F811
    with running_kubelet(kubeconfig, tmp_path / "work") as (kube, _):
        yield kube


def test_serving_pods_with_a_compile_cache_claim_compile_once(kubelet, iris: IrisModels, tmp_path):
    """The compile Job fills the claim once; every serving pod then loads the compiled model."""
    kube = kubelet
    kube.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "ml"}})
    owner = Owner(name="forest", namespace="ml", uid="")
    revision = ServingRevision(
        owner=owner,
        revision="abc123def0",
        model_name="forest",
        model_uri=f"file://{iris.forest_skops}",
        replicas=2,
        extra_args=("--trust-type", TREE_TYPE),
        compile_cache_claim="model-cache",
    )
    job = compile_job(revision)
    job["metadata"].pop("ownerReferences", None)
    kube.create(job)

    def compiled() -> str | None:
        return job_finished(
            kube.get("batch/v1", "Job", "ml", compile_job_name(owner, revision.revision)) or {}
        )

    wait_until(compiled, timeout=120, message="the compile Job to finish")
    assert compiled() == "Complete"
    claim = tmp_path / "work" / "claims" / "ml" / "model-cache"
    assert len(list(claim.glob("*.onnx"))) == 1
    job_pods = sorted((tmp_path / "work" / "pods" / "ml").iterdir())
    assert len(job_pods) == 1
    assert COMPILED in (job_pods[0] / f"{COMPILE_CONTAINER}.log").read_text()

    deployment = serving_deployment(revision)
    deployment["metadata"].pop("ownerReferences", None)
    assert "initContainers" not in deployment["spec"]["template"]["spec"]
    kube.create(deployment)

    def ready() -> bool:
        status = (kube.get("apps/v1", "Deployment", "ml", "forest-abc123def0") or {}).get("status") or {}
        return status.get("readyReplicas") == 2

    wait_until(ready, timeout=120, message="two ready serving pods")
    serving_pods = [pod for pod in (tmp_path / "work" / "pods" / "ml").iterdir() if pod not in job_pods]
    assert len(serving_pods) == 2
    server_logs = [(pod / "server.log").read_text() for pod in serving_pods]
    assert all(SERVER_HIT in log for log in server_logs), server_logs
    assert len(list(claim.glob("*.onnx"))) == 1

    pods = [
        pod
        for pod in kube.list("v1", "Pod", "ml")
        if pod["metadata"]["labels"].get("app.kubernetes.io/component") != "compile"
    ]
    port = json.loads(pods[0]["metadata"]["annotations"]["mlrollouts.io/local-ports"])
    answer = httpx.get(f"http://127.0.0.1:{port['8080']}/v2/models/forest", timeout=10).json()
    assert answer["platform"] == "sklearn_onnx"
