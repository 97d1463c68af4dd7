"""The process kubelet runs Deployments as local processes against the API emulator."""

from __future__ import annotations

import json
import sys
import textwrap
import threading
import urllib.request
from pathlib import Path

import pytest

from mlrollouts.controller.kube import SyncKube
from mlrollouts.local.kubelet import ProcessKubelet, image_repository
from support import wait_until

pytestmark = pytest.mark.integration

# A tiny HTTP server with a --port flag; /ready answers 200 once the file READY_FLAG exists
# (so a test can flip readiness), / answers the pod name, /crash exits the process.
APP = textwrap.dedent(
    """
    import argparse, os, sys
    from http.server import BaseHTTPRequestHandler, HTTPServer
    p = argparse.ArgumentParser(); p.add_argument("--port", type=int); a = p.parse_args()
    class H(BaseHTTPRequestHandler):
        def log_message(self, *args): pass
        def do_GET(self):
            if self.path == "/crash":
                os._exit(3)
            if self.path == "/ready" and os.environ.get("READY_FLAG") and not os.path.exists(os.environ["READY_FLAG"]):
                self.send_response(503); self.end_headers(); return
            body = (os.environ.get("POD_NAME", "") + " " + os.environ.get("GREETING", "")).encode()
            self.send_response(200); self.end_headers(); self.wfile.write(body)
    HTTPServer(("127.0.0.1", a.port), H).serve_forever()
    """
)


def deployment(name: str, replicas: int, greeting: str, ready_flag: str = "") -> dict:
    env = [{"name": "GREETING", "value": greeting}]
    if ready_flag:
        env.append({"name": "READY_FLAG", "value": ready_flag})
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}, "annotations": {"prometheus.io/port": "8000"}},
                "spec": {
                    "terminationGracePeriodSeconds": 2,
                    "containers": [
                        {
                            "name": "app",
                            "image": "python:3.11",
                            "command": [sys.executable, "-c", APP],
                            "args": ["--port", "8000"],
                            "env": env,
                            "ports": [{"containerPort": 8000, "name": "http"}],
                            "readinessProbe": {
                                "httpGet": {"path": "/ready", "port": "http"},
                                "periodSeconds": 1,
                            },
                        }
                    ],
                },
            },
        },
    }


SERVICE = {
    "apiVersion": "v1",
    "kind": "Service",
    "metadata": {"name": "web", "namespace": "default"},
    "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": "http"}]},
}


@pytest.fixture
def cluster(kubeconfig: Path, tmp_path: Path):
    kube = SyncKube.from_environment(str(kubeconfig))
    sd_file = tmp_path / "targets.json"
    kubelet = ProcessKubelet(
        kube, tmp_path / "work", kubeconfig=str(kubeconfig), prometheus_sd_file=sd_file, poll_interval=0.1
    )
    thread = threading.Thread(target=kubelet.run, daemon=True)
    thread.start()
    try:
        yield kube, kubelet, sd_file
    finally:
        kubelet.stop()
        thread.join(timeout=20)
        kube.close()


def ready_addresses(kube: SyncKube) -> list[int]:
    endpoints = kube.get("v1", "Endpoints", "default", "web") or {}
    return sorted(
        port["port"]
        for subset in endpoints.get("subsets") or []
        if subset.get("addresses")
        for port in subset["ports"]
    )


def fetch(port: int, path: str = "/") -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as resp:
        return resp.read().decode()


def test_image_repository_strips_registry_tag_and_digest():
    assert image_repository("mlrollouts/serving") == "mlrollouts/serving"
    assert image_repository("ghcr.io/acme/mlrollouts/serving:0.1@sha256:abc") == "mlrollouts/serving"
    assert image_repository("localhost:5000/mlrollouts/operator:dev") == "mlrollouts/operator"


def test_deployment_runs_as_processes_with_status_endpoints_and_targets(cluster):
    kube, _, sd_file = cluster
    kube.create(SERVICE)
    kube.create(deployment("web", 2, "v1"))

    wait_until(lambda: len(ready_addresses(kube)) == 2, timeout=30, message="two ready endpoints")
    ports = ready_addresses(kube)
    answers = {fetch(p).split()[0] for p in ports}
    pods = {p["metadata"]["name"] for p in kube.list("v1", "Pod", "default")}
    assert answers == pods  # every endpoint is a distinct pod process
    assert all(fetch(p).endswith("v1") for p in ports)

    status = wait_until(
        lambda: (
            (s := (kube.get("apps/v1", "Deployment", "default", "web") or {}).get("status", {})).get(
                "readyReplicas"
            )
            == 2
            and s
        ),
        message="deployment status readyReplicas=2",
    )
    assert status["availableReplicas"] == 2 and status["updatedReplicas"] == 2
    pod = kube.list("v1", "Pod", "default")[0]
    assert pod["metadata"]["labels"]["app"] == "web"
    assert {c["type"]: c["status"] for c in pod["status"]["conditions"]}["Ready"] == "True"

    targets = wait_until(
        lambda: json.loads(sd_file.read_text()) if sd_file.exists() else None, message="prometheus targets"
    )
    assert sorted(int(g["targets"][0].rsplit(":", 1)[1]) for g in targets) == ports
    assert all(g["labels"]["app"] == "web" and g["labels"]["namespace"] == "default" for g in targets)


def test_rolling_update_scale_and_delete(cluster):
    kube, kubelet, _ = cluster
    kube.create(SERVICE)
    kube.create(deployment("web", 1, "v1"))
    wait_until(lambda: len(ready_addresses(kube)) == 1, timeout=30, message="one ready endpoint")

    # a new template replaces the old process only once the new one is ready
    kube.merge_patch("apps/v1", "Deployment", "default", "web", {"spec": deployment("web", 1, "v2")["spec"]})
    wait_until(
        lambda: [fetch(p).split()[-1] for p in ready_addresses(kube)] == ["v2"],
        timeout=30,
        message="endpoint serving v2 only",
    )

    kube.merge_patch("apps/v1", "Deployment", "default", "web", {"spec": {"replicas": 3}})
    wait_until(lambda: len(ready_addresses(kube)) == 3, timeout=30, message="three ready endpoints")
    kube.merge_patch("apps/v1", "Deployment", "default", "web", {"spec": {"replicas": 1}})
    wait_until(
        lambda: len(ready_addresses(kube)) == 1 and len(kubelet.pods) == 1,
        timeout=30,
        message="scaled down to one process",
    )

    procs = [c.popen for p in kubelet.pods.values() for c in p.containers]
    kube.delete("apps/v1", "Deployment", "default", "web")
    wait_until(lambda: not kubelet.pods, timeout=30, message="all processes stopped")
    assert all(p is not None and p.poll() is not None for p in procs)
    wait_until(lambda: not kube.list("v1", "Pod", "default"), message="pod objects removed")


def test_crashed_process_is_restarted_and_readiness_follows_the_probe(cluster, tmp_path):
    kube, kubelet, _ = cluster
    flag = tmp_path / "ready.flag"
    kube.create(SERVICE)
    kube.create(deployment("web", 1, "v1", ready_flag=str(flag)))
    wait_until(
        lambda: kubelet.pods and all(c.running() for p in kubelet.pods.values() for c in p.containers),
        message="process running",
    )
    assert ready_addresses(kube) == []  # running but not ready: no endpoint
    flag.touch()
    wait_until(lambda: len(ready_addresses(kube)) == 1, message="ready after the probe passes")

    port = ready_addresses(kube)[0]
    with pytest.raises(OSError):
        fetch(port, "/crash")
    wait_until(
        lambda: (
            (pod := kube.list("v1", "Pod", "default")[0])["status"]["containerStatuses"][0]["restartCount"]
            >= 1
            and pod["status"]["containerStatuses"][0]["ready"]
        ),
        timeout=30,
        message="restarted and ready again",
    )
    addresses = wait_until(lambda: ready_addresses(kube), message="endpoint back")
    assert fetch(addresses[0]).endswith("v1")


def test_unknown_command_marks_the_pod_failed(cluster):
    kube, _, _ = cluster
    body = deployment("web", 1, "v1")
    body["spec"]["template"]["spec"]["containers"][0]["command"] = ["no-such-binary-here"]
    kube.create(body)
    pod = wait_until(
        lambda: (
            (pods := kube.list("v1", "Pod", "default"))
            and pods[0].get("status", {}).get("phase") == "Failed"
            and pods[0]
        ),
        message="pod failed",
    )
    assert "no-such-binary-here" in pod["status"]["message"]
