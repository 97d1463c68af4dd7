"""A revision with a compile cache compiles once, in a Job, before any of its pods starts: the
Deployment is created only once the Job has completed, and every serving pod takes the compiled
model from the cache.

Real operator (kopf) and API emulator over HTTP; the process kubelet runs the Job's `mlserving
compile` and the real model servers.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from test_admission_untrusted_model_types import MD, TREE, control_plane, status  # noqa: F401

from mlrollouts.local.apiserver.testing import apiserver, kubeconfig  # noqa: F401
from support import wait_until

pytestmark = pytest.mark.integration

JOBS = "/apis/batch/v1/namespaces/default/jobs"
DEPLOYMENTS = "/apis/apps/v1/namespaces/default/deployments"


@pytest.fixture
def forest_model(tmp_path: Path) -> Path:
    import skops.io as sio
    from sklearn.datasets import load_iris
    from sklearn.ensemble import RandomForestClassifier

    x, y = load_iris(return_X_y=True)
    path = tmp_path / "forest.skops"
    sio.dump(RandomForestClassifier(n_estimators=10, max_depth=4, random_state=0).fit(x, y), path)
    return path


def ended(job: dict) -> bool:
    return any(
        c.get("type") in ("Complete", "Failed") and c.get("status") == "True"
        for c in (job.get("status") or {}).get("conditions") or []
    )


def test_the_deployment_waits_for_the_compile_job_and_every_pod_reads_the_cache(
    control_plane,  # noqa: F811
    forest_model: Path,
    tmp_path: Path,
):
    client = control_plane
    manifest = {
        "apiVersion": "mlrollouts.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "trees", "namespace": "default"},
        "spec": {
            "model": {
                "uri": forest_model.as_uri(),
                "format": "sklearn",
                "trustedTypes": [TREE],
                "compileCache": {"persistentVolumeClaim": {"claimName": "model-cache"}},
            },
            "serving": {"replicas": 2},
            "traffic": {"provider": "Service"},
            "rollout": {"strategy": "Immediate"},
        },
    }
    client.post(MD, json=manifest).raise_for_status()

    # watch the Job, the Deployments and the status until the revision is Healthy
    early_deployments: list[str] = []
    messages: set[str] = set()
    deadline = time.monotonic() + 120
    while status(client).get("phase") != "Healthy":
        assert time.monotonic() < deadline, f"not Healthy: {status(client)}"
        jobs = client.get(JOBS).json()["items"]
        deployments = [d["metadata"]["name"] for d in client.get(DEPLOYMENTS).json()["items"]]
        if deployments and not (jobs and ended(jobs[0])):
            early_deployments += deployments
        messages.add(status(client).get("message") or "")
        time.sleep(0.1)
    assert not early_deployments, f"serving pods started before the compile ended: {early_deployments}"
    assert any("compiling the model into the compile cache (Job trees-" in m for m in messages), messages

    [job] = client.get(JOBS).json()["items"]
    revision = status(client)["stableRevision"]
    assert job["metadata"]["name"] == f"trees-{revision}-compile"
    assert job["status"]["succeeded"] == 1 and job["status"]["completionTime"]
    assert [c["type"] for c in job["status"]["conditions"] if c["status"] == "True"][-1] == "Complete"

    # the Job compiled once; both serving pods took the compiled model from the cache
    pods = tmp_path / "pods" / "pods" / "default"
    compile_logs = [p.read_text() for p in pods.glob("trees-*-compile-*/compile.log")]
    server_logs = [p.read_text() for p in pods.glob(f"trees-{revision}-*/server.log")]
    assert len(compile_logs) == 1 and "into the cache in" in compile_logs[0], compile_logs
    assert len(server_logs) == 2, sorted(p.name for p in pods.iterdir())
    assert all("taken from the cache" in log and "compiled to ONNX" not in log for log in server_logs)
    assert len(list((tmp_path / "pods" / "claims" / "default" / "model-cache").glob("*.onnx"))) == 1

    events = client.get("/api/v1/namespaces/default/events").json()["items"]
    reasons = [e["reason"] for e in events if e["involvedObject"].get("name") == "trees"]
    assert "CompileStarted" in reasons and "Compiled" in reasons, reasons
    assert "CompileFailed" not in reasons

    # scaling out needs no compile: the new pod reads the cache at once
    client.patch(
        f"{MD}/trees",
        json={"spec": {"serving": {"replicas": 3}}},
        headers={"Content-Type": "application/merge-patch+json"},
    )
    wait_until(
        lambda: (
            len(list(pods.glob(f"trees-{revision}-*/server.log"))) == 3
            and all(
                "taken from the cache" in p.read_text() for p in pods.glob(f"trees-{revision}-*/server.log")
            )
        ),
        timeout=60,
        message="a third pod serving from the cache",
    )
    assert len(client.get(JOBS).json()["items"]) == 1  # no second compile
