"""What the process kubelet gives the pods of an online-learning ModelDeployment: Secret, ConfigMap
and emptyDir volumes as files under the pod's work dir (paths rewritten in args and env), a pod that
waits for its Secret, Recreate roll-outs, startup probes, and Service names through its proxy."""

from __future__ import annotations

import base64
import json
import stat
import sys
import textwrap
import threading
import time
import urllib.request
from pathlib import Path

import httpx
import pytest

from mlrollouts.controller.kube import SyncKube
from support import wait_until
from support.kubelet import running_kubelet

pytestmark = pytest.mark.integration

# GET / answers the pod name; /file the content of --key-file; /env some of its environment;
# /call?url=U fetches U with urllib (which honours HTTP_PROXY); /started is 503 until STARTED_FLAG exists.
APP = textwrap.dedent(
    """
    import argparse, json, os, urllib.parse, urllib.request
    from http.server import BaseHTTPRequestHandler, HTTPServer
    p = argparse.ArgumentParser(); p.add_argument("--port", type=int); p.add_argument("--key-file")
    a = p.parse_args()
    class H(BaseHTTPRequestHandler):
        def log_message(self, *args): pass
        def answer(self, code, body):
            self.send_response(code); self.send_header("Content-Length", str(len(body))); self.end_headers()
            self.wfile.write(body)
        def do_GET(self):
            path, _, query = self.path.partition("?")
            if path == "/started":
                flag = os.environ.get("STARTED_FLAG", "")
                return self.answer(200 if not flag or os.path.exists(flag) else 503, b"")
            if path == "/file":
                with open(a.key_file, "rb") as f:
                    return self.answer(200, f.read())
            if path == "/env":
                keys = ("KEY_FILE", "SETTINGS", "TMPDIR", "HTTP_PROXY", "NO_PROXY")
                return self.answer(200, json.dumps({k: os.environ.get(k) for k in keys}).encode())
            if path == "/call":
                url = urllib.parse.parse_qs(query)["url"][0]
                try:
                    with urllib.request.urlopen(url, timeout=5) as r:
                        return self.answer(200, r.read())
                except urllib.error.HTTPError as e:
                    return self.answer(e.code, e.read())
            self.answer(200, os.environ.get("POD_NAME", "").encode())
    HTTPServer(("127.0.0.1", a.port), H).serve_forever()
    """
)
KEY = "a-signing-key-of-enough-bytes-0123"
KEY_DIR = "/var/run/example/snapshot-key"


def container(**extra) -> dict:
    return {
        "name": "app",
        "image": "python:3.11",
        "command": [sys.executable, "-c", APP],
        "args": ["--port", "8000"],
        "ports": [{"containerPort": 8000, "name": "http"}],
        "readinessProbe": {"httpGet": {"path": "/", "port": "http"}, "periodSeconds": 1},
        **extra,
    }


def deployment(name: str, pod_spec: dict, replicas: int = 1, strategy: str | None = None) -> dict:
    spec = {
        "replicas": replicas,
        "selector": {"matchLabels": {"app": name}},
        "template": {
            "metadata": {"labels": {"app": name}},
            "spec": {"terminationGracePeriodSeconds": 2, **pod_spec},
        },
    }
    if strategy:
        spec["strategy"] = {"type": strategy}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": "default"},
        "spec": spec,
    }


def service(name: str) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"selector": {"app": name}, "ports": [{"name": "http", "port": 80, "targetPort": "http"}]},
    }


def secret(name: str, data: dict[str, str]) -> dict:
    encoded = {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": "default"},
        "data": encoded,
    }


@pytest.fixture
def cluster(kubeconfig: Path, tmp_path: Path):
    with running_kubelet(kubeconfig, tmp_path / "work", service_proxy_port=0) as running:
        yield running


def ready_ports(kube: SyncKube, name: str) -> list[int]:
    endpoints = kube.get("v1", "Endpoints", "default", name) or {}
    return sorted(
        port["port"]
        for subset in endpoints.get("subsets") or []
        if subset.get("addresses")
        for port in subset["ports"]
    )


def get(port: int, path: str = "/") -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
        return resp.read().decode()


def pod_of(kube: SyncKube, name: str) -> dict | None:
    pods = [p for p in kube.list("v1", "Pod", "default") if p["metadata"]["name"].startswith(f"{name}-")]
    return pods[0] if pods else None


def test_secret_volume_is_mounted_as_decoded_files_once_the_secret_exists(cluster, tmp_path):
    kube, kubelet = cluster
    key_file = f"{KEY_DIR}/signing-key"
    pod_spec = {
        "containers": [
            container(
                args=["--port", "8000", "--key-file", key_file],
                env=[{"name": "KEY_FILE", "value": key_file}],
                volumeMounts=[{"name": "key", "mountPath": KEY_DIR, "readOnly": True}],
            )
        ],
        "volumes": [
            {
                "name": "key",
                "secret": {
                    "secretName": "learner-key",
                    "defaultMode": 0o440,
                    "items": [{"key": "signing-key", "path": "signing-key"}],
                },
            }
        ],
    }
    kube.create(service("learner"))
    kube.create(deployment("learner", pod_spec))

    # no Secret yet: the pod waits (not Failed), and says for what
    pod = wait_until(
        lambda: (p := pod_of(kube, "learner")) and "learner-key" in json.dumps(p.get("status", {})) and p,
        message="pod waiting for its Secret",
    )
    assert pod["status"]["phase"] == "Pending"
    waiting = pod["status"]["containerStatuses"][0]["state"]["waiting"]
    assert waiting["reason"] == "ContainerCreating" and "learner-key" in waiting["message"]
    assert ready_ports(kube, "learner") == []

    kube.create(secret("learner-key", {"signing-key": KEY, "other": "not mounted"}))
    port = wait_until(
        lambda: ready_ports(kube, "learner"), timeout=30, message="ready once the Secret exists"
    )[0]
    assert get(port, "/file") == KEY

    env = json.loads(get(port, "/env"))
    local = Path(env["KEY_FILE"])
    pod = next(iter(kubelet.pods.values()))
    assert local == pod.workdir / "volumes" / "key" / "signing-key"
    assert local.read_text() == KEY
    assert stat.S_IMODE(local.stat().st_mode) == 0o440
    assert sorted(p.name for p in local.parent.iterdir()) == ["signing-key"]  # only the listed item


def test_config_map_and_empty_dir_volumes(cluster):
    kube, kubelet = cluster
    kube.create(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "settings", "namespace": "default"},
            "data": {"settings.json": '{"window": 200}'},
        }
    )
    pod_spec = {
        "containers": [
            container(
                args=["--port", "8000", "--key-file=/etc/app/settings.json"],
                env=[{"name": "SETTINGS", "value": "/etc/app/settings.json"}],
                volumeMounts=[
                    {"name": "config", "mountPath": "/etc/app"},
                    {"name": "tmp", "mountPath": "/tmp"},
                ],
            )
        ],
        "volumes": [{"name": "config", "configMap": {"name": "settings"}}, {"name": "tmp", "emptyDir": {}}],
    }
    kube.create(deployment("configured", pod_spec))
    kube.create(service("configured"))
    port = wait_until(lambda: ready_ports(kube, "configured"), timeout=30, message="ready")[0]
    assert json.loads(get(port, "/file")) == {"window": 200}  # --flag=/path is rewritten too
    env = json.loads(get(port, "/env"))
    pod = next(iter(kubelet.pods.values()))
    assert env["SETTINGS"] == str(pod.workdir / "volumes" / "config" / "settings.json")
    assert env["TMPDIR"] == str(pod.workdir / "volumes" / "tmp")  # the container's /tmp is its emptyDir
    assert Path(env["TMPDIR"]).is_dir()


def test_an_unsupported_volume_type_fails_the_pod_naming_it(cluster):
    kube, _ = cluster
    pod_spec = {
        "containers": [container(volumeMounts=[{"name": "data", "mountPath": "/data"}])],
        "volumes": [{"name": "data", "nfs": {"server": "nfs.example", "path": "/data"}}],
    }
    kube.create(deployment("claims", pod_spec))
    pod = wait_until(
        lambda: (p := pod_of(kube, "claims")) and p.get("status", {}).get("phase") == "Failed" and p,
        message="pod failed",
    )
    assert "nfs" in pod["status"]["message"] and "data" in pod["status"]["message"]


def test_recreate_never_runs_two_generations_at_once(cluster):
    kube, kubelet = cluster
    body = deployment(
        "single", {"containers": [container(env=[{"name": "GEN", "value": "1"}])]}, strategy="Recreate"
    )
    kube.create(body)
    kube.create(service("single"))
    first = wait_until(lambda: ready_ports(kube, "single"), timeout=30, message="first generation ready")
    overlap = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            running = [
                p.name
                for p in list(kubelet.pods.values())
                if p.deployment == "single" and any(c.running() for c in p.containers)
            ]
            if len(running) > 1:
                overlap.append(running)
            time.sleep(0.01)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        body["spec"]["template"]["spec"]["containers"][0]["env"][0]["value"] = "2"
        kube.merge_patch("apps/v1", "Deployment", "default", "single", {"spec": body["spec"]})
        wait_until(
            lambda: (ports := ready_ports(kube, "single")) and ports != first,
            timeout=30,
            message="second generation ready",
        )
    finally:
        stop.set()
        watcher.join()
    assert not overlap, overlap[:3]


def test_startup_probe_holds_readiness_until_it_passes(cluster, tmp_path):
    kube, kubelet = cluster
    flag = tmp_path / "started.flag"
    probe = {"httpGet": {"path": "/started", "port": "http"}, "periodSeconds": 1, "failureThreshold": 60}
    pod_spec = {
        "containers": [container(env=[{"name": "STARTED_FLAG", "value": str(flag)}], startupProbe=probe)]
    }
    kube.create(deployment("slow", pod_spec))
    kube.create(service("slow"))
    wait_until(
        lambda: kubelet.pods and all(c.running() for p in kubelet.pods.values() for c in p.containers),
        message="process running",
    )
    process = next(iter(kubelet.pods.values())).containers[0]
    port = process.ports[8000]
    wait_until(lambda: get(port) != "", message="the process answers")  # its readiness path passes
    time.sleep(2.5)
    assert ready_ports(kube, "slow") == [] and not process.ready
    flag.touch()
    assert wait_until(lambda: ready_ports(kube, "slow"), timeout=15, message="ready after startup") == [port]
    assert process.restarts == 0


def test_service_names_resolve_through_the_proxy(cluster):
    kube, kubelet = cluster
    kube.create(service("web"))
    kube.create(deployment("web", {"containers": [container()]}, replicas=2))
    kube.create(service("client"))
    kube.create(deployment("client", {"containers": [container()]}))
    wait_until(lambda: len(ready_ports(kube, "web")) == 2, timeout=30, message="two web endpoints")
    client_port = wait_until(lambda: ready_ports(kube, "client"), timeout=30, message="client ready")[0]
    web_pods = {p.name for p in kubelet.pods.values() if p.deployment == "web"}

    # a pod reaches a Service by its cluster name, with its own HTTP client
    env = json.loads(get(client_port, "/env"))
    assert env["HTTP_PROXY"] == kubelet.service_proxy.url and "127.0.0.1" in env["NO_PROXY"]
    answers = {get(client_port, "/call?url=http://web.default.svc.cluster.local/") for _ in range(6)}
    assert answers == web_pods  # round robin over both replicas

    with httpx.Client(proxy=kubelet.service_proxy.url, trust_env=False, timeout=5) as client:
        assert client.get("http://web.default.svc:80/").text in web_pods
        assert client.get("http://web.default/").text in web_pods
        missing = client.get("http://nowhere.default.svc/")
        assert missing.status_code == 503 and "nowhere" in missing.json()["error"]
        wrong_port = client.get("http://web.default.svc:8080/")
        assert wrong_port.status_code == 503 and "8080" in wrong_port.json()["error"]

    kube.merge_patch("apps/v1", "Deployment", "default", "web", {"spec": {"replicas": 0}})
    wait_until(lambda: not ready_ports(kube, "web"), timeout=30, message="no web endpoint")
    with httpx.Client(proxy=kubelet.service_proxy.url, trust_env=False, timeout=5) as client:
        gone = wait_until(
            lambda: (r := client.get("http://web.default.svc/")).status_code == 503 and r,
            message="503 without endpoints",
        )
    assert "no ready endpoint" in gone.json()["error"]
