"""kubectl 1.32 against the emulator: apply (client- and server-side), get, describe, delete, selectors."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml

from support import require_binary, running, wait_until

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture
def kubectl(kubeconfig, tmp_path):
    binary = require_binary("kubectl")
    cache = tmp_path / "kube-cache"

    def run(*args: str, stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        argv = [binary, f"--kubeconfig={kubeconfig}", f"--cache-dir={cache}", "--request-timeout=20s", *args]
        result = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=60)
        if check and result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
        return result

    return run


DEPLOYMENT = """
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  labels: {app: web, tier: front}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: main
        image: IMAGE
        ports: [{containerPort: 8080}]
        env: [{name: A, value: "1"}, {name: B, value: "B_VALUE"}]
      - name: sidecar
        image: busybox
"""

SERVICE = """
apiVersion: v1
kind: Service
metadata: {name: web, labels: {app: web}}
spec:
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: ConfigMap
metadata: {name: settings, labels: {app: web}}
data: {mode: MODE}
"""


def test_apply_twice_updates_by_strategic_merge(kubectl, apiserver, tmp_path):
    manifest = tmp_path / "deploy.yaml"
    manifest.write_text(DEPLOYMENT.replace("IMAGE", "app:1").replace("B_VALUE", "2"))
    assert "deployment.apps/web created" in kubectl("apply", "-f", str(manifest)).stdout
    # A controller adds a container field kubectl never applied; apply must keep it (merge by name).
    kubectl(
        "patch",
        "deployment",
        "web",
        "--type=strategic",
        "-p",
        json.dumps(
            {"spec": {"template": {"spec": {"containers": [{"name": "main", "workingDir": "/srv"}]}}}}
        ),
    )
    manifest.write_text(DEPLOYMENT.replace("IMAGE", "app:2").replace("B_VALUE", "3"))
    assert "deployment.apps/web configured" in kubectl("apply", "-f", str(manifest)).stdout
    live = yaml.safe_load(kubectl("get", "deployment", "web", "-o", "yaml").stdout)
    main, sidecar = live["spec"]["template"]["spec"]["containers"]
    assert main["image"] == "app:2" and main["workingDir"] == "/srv"
    assert main["env"] == [{"name": "A", "value": "1"}, {"name": "B", "value": "3"}]
    assert sidecar["name"] == "sidecar"
    assert live["metadata"]["generation"] == 3
    patches = [e for e in apiserver.audit if e["verb"] == "patch" and e["resource"] == "deployments"]
    assert patches, "the second apply must be a PATCH"
    # dropping a container from the manifest removes it (three-way merge through last-applied)
    manifest.write_text(
        DEPLOYMENT.replace("IMAGE", "app:2").replace("B_VALUE", "3").split("      - name: sidecar")[0]
    )
    kubectl("apply", "-f", str(manifest))
    live = yaml.safe_load(kubectl("get", "deployment", "web", "-o", "yaml").stdout)
    assert [c["name"] for c in live["spec"]["template"]["spec"]["containers"]] == ["main"]


def test_apply_service_and_configmap_twice(kubectl, tmp_path):
    manifest = tmp_path / "svc.yaml"
    manifest.write_text(SERVICE.replace("MODE", "a"))
    kubectl("apply", "-f", str(manifest))
    manifest.write_text(SERVICE.replace("MODE", "b").replace("port: 80,", "port: 81,"))
    out = kubectl("apply", "-f", str(manifest)).stdout
    assert "service/web configured" in out and "configmap/settings configured" in out
    svc = json.loads(kubectl("get", "service", "web", "-o", "json").stdout)
    assert [p["port"] for p in svc["spec"]["ports"]] == [81]
    assert svc["spec"]["clusterIP"]
    assert json.loads(kubectl("get", "configmap", "settings", "-o", "json").stdout)["data"] == {"mode": "b"}
    unchanged = kubectl("apply", "-f", str(manifest)).stdout
    assert "service/web unchanged" in unchanged


def test_get_columns_label_selectors_describe_delete(kubectl, tmp_path):
    manifest = tmp_path / "all.yaml"
    manifest.write_text(
        SERVICE.replace("MODE", "a") + "---\n" + DEPLOYMENT.replace("IMAGE", "a").replace("B_VALUE", "1")
    )
    kubectl("apply", "-f", str(manifest))
    table = kubectl("get", "deployments").stdout.splitlines()
    assert table[0].split() == ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"]
    assert table[1].split()[:2] == ["web", "0/2"]
    selected = kubectl("get", "deploy,svc,cm", "-l", "tier=front", "-o", "name").stdout.split()
    assert selected == ["deployment.apps/web"]
    selected = kubectl("get", "svc,cm", "-l", "app in (web),tier!=front", "-o", "name").stdout.split()
    assert sorted(selected) == ["configmap/settings", "service/web"]
    description = kubectl("describe", "deployment", "web").stdout
    assert "Name:" in description and "web" in description and "app:" not in description.split("Labels:")[0]
    assert "Replicas:" in description
    assert 'deployment.apps "web" deleted' in kubectl("delete", "deployment", "web").stdout
    missing = kubectl("get", "deployment", "web", check=False)
    assert missing.returncode != 0 and "NotFound" in missing.stderr


def test_server_side_apply(kubectl, tmp_path):
    manifest = tmp_path / "cm.yaml"
    manifest.write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: ssa}\ndata: {a: '1', b: '2'}\n")
    assert "serverside-applied" in kubectl("apply", "--server-side", "-f", str(manifest)).stdout
    manifest.write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: ssa}\ndata: {a: '3'}\n")
    kubectl("apply", "--server-side", "-f", str(manifest))
    assert json.loads(kubectl("get", "cm", "ssa", "-o", "json").stdout)["data"] == {"a": "3"}


def test_custom_resources_printer_columns_categories_and_validation(kubectl, widget_crd, tmp_path):
    kubectl("wait", "--for=condition=established", "crd/widgets.example.com", "--timeout=10s")
    good = tmp_path / "good.yaml"
    good.write_text(
        "apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w1}\nspec: {size: 3, color: red}\n"
    )
    assert "widget.example.com/w1 created" in kubectl("apply", "-f", str(good)).stdout
    table = kubectl("get", "wdg").stdout.splitlines()
    assert table[0].split() == ["NAME", "SIZE", "PHASE", "AGE"]
    assert table[1].split()[:2] == ["w1", "3"]
    assert kubectl("get", "things", "-o", "name").stdout.split() == ["widget.example.com/w1"]
    described = kubectl("describe", "widget", "w1").stdout
    assert "Kind:         Widget" in described and "Size:" in described
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w2}\nspec: {size: 30, color: green}\n"
    )
    rejected = kubectl("apply", "-f", str(bad), check=False)
    assert rejected.returncode != 0
    assert 'spec.color: Unsupported value: "green"' in rejected.stderr
    assert "size above 10 needs big" in rejected.stderr
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text(
        "apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w3}\nspec: {size: 1, colour: red}\n"
    )
    strict = kubectl("apply", "-f", str(unknown), check=False)
    assert strict.returncode != 0 and 'unknown field "spec.colour"' in strict.stderr
    kubectl("delete", "-f", str(good))
    assert kubectl("get", "widgets", "-o", "name").stdout.strip() == ""


def test_cli_serves_until_sigterm(tmp_path):
    kubectl_bin = require_binary("kubectl")
    kubeconfig = tmp_path / "kc"
    audit = tmp_path / "audit.jsonl"
    argv = [
        str(ROOT / ".venv/bin/mlrollouts"),
        "local",
        "apiserver",
        "--port",
        "0",
        "--kubeconfig",
        str(kubeconfig),
        "--audit-log",
        str(audit),
    ]
    with running(argv, tmp_path / "apiserver.log") as proc:
        wait_until(lambda: "serving on" in proc.output(), message="the emulator to print its URL")
        url = proc.output().split("serving on ")[1].split()[0]
        assert yaml.safe_load(kubeconfig.read_text())["clusters"][0]["cluster"]["server"] == url
        result = subprocess.run(
            [
                kubectl_bin,
                f"--kubeconfig={kubeconfig}",
                f"--cache-dir={tmp_path / 'cache'}",
                "get",
                "namespaces",
                "-o",
                "name",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert "namespace/default" in result.stdout.split(), result.stderr
        code = proc.stop()
    assert code == 0
    records = [json.loads(line) for line in audit.read_text().splitlines()]
    assert {"verb": "list", "resource": "namespaces"}.items() <= next(
        r for r in records if r.get("resource") == "namespaces"
    ).items()


def test_create_generators_send_protobuf(kubectl):
    assert "namespace/demo created" in kubectl("create", "namespace", "demo").stdout
    kubectl(
        "create", "configmap", "settings", "-n", "demo", "--from-literal=mode=fast", "--from-literal=level=3"
    )
    kubectl("create", "secret", "generic", "token", "-n", "demo", "--from-literal=key=s3cret")
    assert json.loads(kubectl("get", "cm", "settings", "-n", "demo", "-o", "json").stdout)["data"] == {
        "mode": "fast",
        "level": "3",
    }
    assert json.loads(kubectl("get", "secret", "token", "-n", "demo", "-o", "json").stdout)["data"] == {
        "key": "czNjcmV0"
    }
    unsupported = kubectl("create", "deployment", "web", "--image=app", check=False)
    assert unsupported.returncode != 0 and "send JSON or YAML" in unsupported.stderr
