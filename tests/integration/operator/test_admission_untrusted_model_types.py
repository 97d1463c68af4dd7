"""A skops model with untrusted types: the ModelDeployment is Degraded at once, naming the types and
the field to set, and serves once they are trusted.

Real operator (kopf) and API emulator over HTTP; the process kubelet runs the real model server.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from mlrollouts.api.crd import all_crds
from mlrollouts.controller.kube import SyncKube
from mlrollouts.local.apiserver.testing import apiserver, kubeconfig  # noqa: F401
from mlrollouts.local.kubelet import ProcessKubelet
from support import PYTHON, Proc, free_port, wait_until

pytestmark = pytest.mark.integration

TREE = "sklearn.tree._tree.Tree"
MD = "/apis/mlrollouts.io/v1alpha1/namespaces/default/modeldeployments"


@pytest.fixture
def tree_model(tmp_path: Path) -> Path:
    import skops.io as sio
    from sklearn.tree import DecisionTreeClassifier

    path = tmp_path / "model.skops"
    sio.dump(DecisionTreeClassifier(max_depth=2).fit([[0.0], [1.0], [2.0], [3.0]], [0, 0, 1, 1]), path)
    return path


@pytest.fixture
def control_plane(apiserver, kubeconfig: Path, tmp_path: Path) -> Iterator[httpx.Client]:  # noqa: F811
    client = httpx.Client(base_url=apiserver.url, timeout=10)
    for crd in all_crds():
        client.post("/apis/apiextensions.k8s.io/v1/customresourcedefinitions", json=crd).raise_for_status()
    wait_until(lambda: client.get(MD).status_code == 200, timeout=10, message="CRD served")
    kube = SyncKube.from_environment(str(kubeconfig))
    kubelet = ProcessKubelet(kube, tmp_path / "pods", kubeconfig=str(kubeconfig), poll_interval=0.1)
    thread = threading.Thread(target=kubelet.run, daemon=True)
    thread.start()
    argv = [PYTHON, "-m", "mlrollouts.cli.main", "operator", "run", "--tick", "0.5", "--poll", "0.3"]
    argv += ["--metrics-port", str(free_port())]
    env = {**os.environ, "KUBECONFIG": str(kubeconfig), "PYTHONUNBUFFERED": "1"}
    operator = Proc(argv, tmp_path / "operator.log", env=env)
    try:
        yield client
    finally:
        operator.stop()
        kubelet.stop()
        thread.join(timeout=20)
        kube.close()
        client.close()


def status(client: httpx.Client) -> dict:
    return client.get(f"{MD}/trees").json().get("status") or {}


def condition(client: httpx.Client, kind: str) -> dict:
    return next((c for c in status(client).get("conditions") or [] if c["type"] == kind), {})


def test_untrusted_types_degrade_at_once_and_trusting_them_serves(control_plane, tree_model: Path):
    client = control_plane
    manifest = {
        "apiVersion": "mlrollouts.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "trees", "namespace": "default"},
        "spec": {
            "model": {"uri": tree_model.as_uri(), "format": "sklearn"},
            "serving": {"replicas": 1},
            "traffic": {"provider": "Service"},
            "rollout": {"strategy": "Immediate"},
        },
    }
    client.post(MD, json=manifest).raise_for_status()

    def refused() -> dict | None:
        found = condition(client, "Degraded")
        return found if found.get("reason") == "UntrustedModelTypes" else None

    degraded = wait_until(refused, timeout=60, message="Degraded with UntrustedModelTypes")
    assert degraded["status"] == "True"
    assert degraded["message"].startswith("spec.model.trustedTypes: ")
    assert TREE in degraded["message"]
    assert status(client)["phase"] == "Degraded"

    patch = {"spec": {"model": {"trustedTypes": [TREE]}}}
    client.patch(f"{MD}/trees", json=patch, headers={"Content-Type": "application/merge-patch+json"})
    wait_until(lambda: status(client).get("phase") == "Healthy", timeout=90, message="Healthy once trusted")
    assert condition(client, "Degraded").get("status") != "True"
