"""A control plane on one machine for the operator's integration tests.

- the API emulator (``mlrollouts.local.apiserver``) as its own process on a loopback port, with the
  mlrollouts CRDs registered over HTTP;
- a stand-in for the kubelet and the Deployment controller: it reports every serving/router
  Deployment as rolled out and ready (``status.readyReplicas = spec.replicas``), unless the test
  holds a revision back; the pods themselves are played by exporter processes;
- the real operator process (``mlrollouts operator run``) with ``KUBECONFIG`` pointing at the emulator.
"""

from __future__ import annotations

import contextlib
import os
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from mlrollouts.api.crd import all_crds
from support import PYTHON, Proc, free_port, wait_until

EMULATOR_SCRIPT = textwrap.dedent(
    """
    import sys, threading
    from mlrollouts.local.apiserver import ApiServer
    api = ApiServer(port=int(sys.argv[1])).start()
    api.write_kubeconfig(sys.argv[2])
    threading.Event().wait()
    """
)
MD_PATH = "/apis/mlrollouts.io/v1alpha1/namespaces/{ns}/modeldeployments"


class Cluster:
    def __init__(self, workdir: Path, kubelet_interval: float = 0.1) -> None:
        self.workdir = workdir
        self.kubelet_interval = kubelet_interval
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.kubeconfig = workdir / "kubeconfig"
        self.proc = Proc(self.emulator_argv(), workdir / "apiserver.log")
        self.http = httpx.Client(base_url=self.url, timeout=10)
        wait_until(self._up, timeout=30, message="API emulator up")
        for crd in all_crds():
            self.request("POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", crd)
        wait_until(
            lambda: self.http.get(MD_PATH.format(ns="default")).status_code == 200,
            timeout=10,
            message="ModelDeployment CRD served",
        )
        self.held: set[str] = set()
        self._stop = threading.Event()
        self._kubelet = threading.Thread(target=self._play_kubelet, name="kubelet", daemon=True)
        self._kubelet.start()

    def emulator_argv(self) -> list[str]:
        """How the API server of this cluster is started."""
        return [PYTHON, "-c", EMULATOR_SCRIPT, str(self.port), str(self.kubeconfig)]

    def _up(self) -> bool:
        if not self.proc.alive():
            raise AssertionError(f"emulator exited:\n{self.proc.output()[-3000:]}")
        try:
            return self.kubeconfig.exists() and self.http.get("/version").status_code == 200
        except httpx.HTTPError:
            return False

    def request(self, method: str, path: str, body: Any = None, content_type: str | None = None) -> Any:
        headers = {"Content-Type": content_type} if content_type else {}
        response = self.http.request(method, path, json=body, headers=headers)
        if response.status_code >= 400:
            raise AssertionError(f"{method} {path}: {response.status_code} {response.text[:500]}")
        return response.json()

    # -- ModelDeployments --------------------------------------------------------------------------

    def create_namespace(self, name: str) -> None:
        self.request(
            "POST",
            "/api/v1/namespaces",
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}},
        )

    def create(self, ns: str, manifest: dict[str, Any]) -> dict[str, Any]:
        return self.request("POST", MD_PATH.format(ns=ns), manifest)

    def get(self, ns: str, name: str) -> dict[str, Any]:
        return self.request("GET", f"{MD_PATH.format(ns=ns)}/{name}")

    def status(self, ns: str, name: str) -> dict[str, Any]:
        return self.get(ns, name).get("status") or {}

    def patch(self, ns: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        return self.request("PATCH", f"{MD_PATH.format(ns=ns)}/{name}", patch, "application/merge-patch+json")

    def annotate(self, ns: str, name: str, key: str, value: str | None) -> None:
        self.patch(ns, name, {"metadata": {"annotations": {key: value}}})

    def objects(self, path: str) -> list[dict[str, Any]]:
        return list(self.request("GET", path).get("items") or [])

    def events(self, ns: str, name: str) -> list[dict[str, Any]]:
        return [
            e for e in self.objects(f"/api/v1/namespaces/{ns}/events") if e["involvedObject"]["name"] == name
        ]

    # -- the kubelet's part ------------------------------------------------------------------------

    def _play_kubelet(self) -> None:
        client = httpx.Client(base_url=self.url, timeout=5)
        while not self._stop.is_set():
            with contextlib.suppress(httpx.HTTPError, KeyError, ValueError):
                deployments = client.get("/apis/apps/v1/deployments").json().get("items") or []
                for dep in deployments:
                    meta, spec = dep["metadata"], dep.get("spec") or {}
                    rev = meta.get("labels", {}).get("mlrollouts.io/revision")
                    want = 0 if rev in self.held else int(spec.get("replicas") or 0)
                    status = dep.get("status") or {}
                    current = (
                        status.get("readyReplicas"),
                        status.get("observedGeneration"),
                        status.get("replicas"),
                    )
                    if current != (want, meta.get("generation"), spec.get("replicas")):
                        client.patch(
                            f"/apis/apps/v1/namespaces/{meta['namespace']}/deployments/{meta['name']}/status",
                            json={
                                "status": {
                                    "replicas": spec.get("replicas"),
                                    "readyReplicas": want,
                                    "availableReplicas": want,
                                    "updatedReplicas": spec.get("replicas"),
                                    "observedGeneration": meta.get("generation"),
                                }
                            },
                            headers={"Content-Type": "application/merge-patch+json"},
                        )
            self._stop.wait(self.kubelet_interval)
        client.close()

    def stop(self) -> None:
        self._stop.set()
        self._kubelet.join(timeout=5)
        self.http.close()
        self.proc.stop()


def start_operator(
    cluster: Cluster,
    workdir: Path,
    prometheus_url: str | None,
    name: str = "operator",
    tick: float = 0.25,
    poll: float = 0.3,
) -> tuple[Proc, int]:
    """The operator process; a short tick and poll keep the tests quick (defaults: 30 s and 1 s)."""
    metrics_port = free_port()
    argv = [
        PYTHON,
        "-m",
        "mlrollouts.cli.main",
        "operator",
        "run",
        "--metrics-port",
        str(metrics_port),
        "--tick",
        str(tick),
        "--poll",
        str(poll),
    ]
    if prometheus_url:
        argv += ["--prometheus-url", prometheus_url]
    env = {"KUBECONFIG": str(cluster.kubeconfig), "PYTHONUNBUFFERED": "1"}
    env.pop("MLROLLOUTS_PROMETHEUS_URL", None)
    proc = Proc(argv, workdir / f"{name}-{time.monotonic_ns()}.log", env={**os.environ, **env})
    return proc, metrics_port


@contextlib.contextmanager
def running_cluster(workdir: Path) -> Iterator[Cluster]:
    cluster = Cluster(workdir)
    try:
        yield cluster
    finally:
        cluster.stop()
