"""`helm install`, `upgrade` and `uninstall` of the chart with the real Helm engine (helm-python-sdk)
against the API emulator, a real process: CRDs first, then every object of the release."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import helm_python
import httpx
import pytest
import yaml

from support import Proc, wait_until

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[3]
CHART = REPO_ROOT / "charts" / "mlrollouts"
BIN = Path(sys.executable).parent
NAMESPACE = "mlrollouts-system"
CLUSTER_SCOPED = {
    "ClusterRole",
    "ClusterRoleBinding",
    "ClusterKopfPeering",
    "CustomResourceDefinition",
    "Namespace",
    "ValidatingWebhookConfiguration",
}
PLURALS = {
    "Deployment": ("apps/v1", "deployments"),
    "Service": ("v1", "services"),
    "ServiceAccount": ("v1", "serviceaccounts"),
    "ConfigMap": ("v1", "configmaps"),
    "ClusterRole": ("rbac.authorization.k8s.io/v1", "clusterroles"),
    "ClusterRoleBinding": ("rbac.authorization.k8s.io/v1", "clusterrolebindings"),
    "Role": ("rbac.authorization.k8s.io/v1", "roles"),
    "RoleBinding": ("rbac.authorization.k8s.io/v1", "rolebindings"),
    "PodDisruptionBudget": ("policy/v1", "poddisruptionbudgets"),
    "ClusterKopfPeering": ("kopf.dev/v1", "clusterkopfpeerings"),
    "KopfPeering": ("kopf.dev/v1", "kopfpeerings"),
    "CustomResourceDefinition": ("apiextensions.k8s.io/v1", "customresourcedefinitions"),
    "ValidatingWebhookConfiguration": (
        "admissionregistration.k8s.io/v1",
        "validatingwebhookconfigurations",
    ),
}


class Cluster:
    def __init__(self, workdir: Path) -> None:
        self.kubeconfig = workdir / "kubeconfig"
        self.proc = Proc(
            [
                str(BIN / "mlrollouts"),
                "local",
                "apiserver",
                "--port",
                "0",
                "--kubeconfig",
                str(self.kubeconfig),
            ],
            workdir / "apiserver.log",
        )
        wait_until(
            lambda: self.proc.alive() and "serving on" in self.proc.output(),
            timeout=30,
            message="the API emulator",
        )
        server = yaml.safe_load(self.kubeconfig.read_text())["clusters"][0]["cluster"]["server"]
        self.http = httpx.Client(base_url=server, timeout=10)

    def path(self, kind: str, name: str, namespace: str | None) -> str:
        api_version, plural = PLURALS[kind]
        base = f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"
        ns = f"/namespaces/{namespace}" if kind not in CLUSTER_SCOPED else ""
        return f"{base}{ns}/{plural}/{name}"

    def get(self, kind: str, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        response = self.http.get(self.path(kind, name, namespace))
        if response.status_code == 404:
            return None
        response.raise_for_status()
        return response.json()

    def create_namespace(self, name: str) -> None:
        self.http.post(
            "/api/v1/namespaces", json={"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
        )

    def helm(self) -> helm_python.Config:
        return helm_python.Config(
            kubeconfig_path=self.kubeconfig, namespace=NAMESPACE, storage_driver="memory"
        )


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(tmp_path)
    try:
        yield c
    finally:
        c.http.close()
        c.proc.stop()


def manifest_objects(release: dict[str, Any]) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(release["manifest"]) if d]


def assert_release_present(cluster: Cluster, release: dict[str, Any]) -> list[dict[str, Any]]:
    objects = manifest_objects(release)
    assert objects
    for obj in objects:
        found = cluster.get(obj["kind"], obj["metadata"]["name"], obj["metadata"].get("namespace", NAMESPACE))
        assert found is not None, f"{obj['kind']} {obj['metadata']['name']} not in the cluster"
        assert found["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "Helm"
        assert found["metadata"]["annotations"]["meta.helm.sh/release-name"] == "mlr"
    return objects


def test_install_upgrade_uninstall(cluster: Cluster) -> None:
    with cluster.helm() as helm:
        release = helm.install(CHART, "mlr", {}, namespace=NAMESPACE, create_namespace=True, timeout=60)
        assert release["status"] == "deployed"
        assert "mlr-mlrollouts" in release["notes"]
        # the CRDs of the chart and of its peering subchart came first
        for crd in (
            "modeldeployments.mlrollouts.io",
            "experiments.mlrollouts.io",
            "compositemodels.mlrollouts.io",
            "kopfpeerings.kopf.dev",
            "clusterkopfpeerings.kopf.dev",
        ):
            assert cluster.get("CustomResourceDefinition", crd) is not None, crd
        kinds = {o["kind"] for o in assert_release_present(cluster, release)}
        assert {"Deployment", "ClusterRole", "ClusterRoleBinding", "ServiceAccount", "Service"} <= kinds
        assert "PodDisruptionBudget" not in kinds

        # HA: a second replica brings the disruption budget and the peering object along
        release = helm.upgrade(CHART, "mlr", {"replicaCount": 2}, namespace=NAMESPACE, timeout=60)
        assert release["revision"] == 2
        assert_release_present(cluster, release)
        assert cluster.get("Deployment", "mlr-mlrollouts", NAMESPACE)["spec"]["replicas"] == 2
        assert cluster.get("PodDisruptionBudget", "mlr-mlrollouts", NAMESPACE) is not None
        assert cluster.get("ClusterKopfPeering", "mlr-mlrollouts") is not None

        # schema violations never reach the cluster
        with pytest.raises(helm_python.HelmError, match="replicaCount"):
            helm.upgrade(CHART, "mlr", {"replicaCount": 0}, namespace=NAMESPACE, timeout=60)
        assert cluster.get("Deployment", "mlr-mlrollouts", NAMESPACE)["spec"]["replicas"] == 2

        helm.uninstall("mlr", timeout=60)
    for kind in ("Deployment", "ServiceAccount", "ClusterRole", "PodDisruptionBudget", "ClusterKopfPeering"):
        assert cluster.get(kind, "mlr-mlrollouts", NAMESPACE) is None, kind
    # Helm never deletes CRDs (that would delete every user's resources)
    assert cluster.get("CustomResourceDefinition", "modeldeployments.mlrollouts.io") is not None


def test_install_namespaced_mode(cluster: Cluster) -> None:
    for ns in ("team-a", "team-b"):
        cluster.create_namespace(ns)
    values = {"watch": {"scope": "Namespaced", "namespaces": ["team-a", "team-b"]}, "replicaCount": 2}
    with cluster.helm() as helm:
        release = helm.install(CHART, "mlr", values, namespace=NAMESPACE, create_namespace=True, timeout=60)
        assert release["status"] == "deployed"
        kinds = {o["kind"] for o in assert_release_present(cluster, release)}
    assert not kinds & {"ClusterRole", "ClusterRoleBinding", "ClusterKopfPeering"}
    for ns in ("team-a", "team-b"):
        assert cluster.get("Role", "mlr-mlrollouts", ns) is not None
        assert cluster.get("RoleBinding", "mlr-mlrollouts", ns)["subjects"][0]["namespace"] == NAMESPACE
        assert cluster.get("KopfPeering", "mlr-mlrollouts", ns) is not None
