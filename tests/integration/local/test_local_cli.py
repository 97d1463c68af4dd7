"""`mlrollouts local up --detach`, `status` and `down` as a user runs them, from any directory; kubectl
against the playground (`logs`, `explain`)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_kubelet import APP, SERVICE, deployment

from mlrollouts.controller.kube import SyncKube
from support import require_binary, wait_until

pytestmark = pytest.mark.integration


def cli(*args: str, cwd: Path, env: dict[str, str], timeout: float = 150) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mlrollouts.cli.main", "local", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        env={**os.environ, **env},
    )


def greeting_web(kube: SyncKube) -> str:
    """A Deployment and Service `web` whose pod says hello on its output; the pod's name."""
    web = deployment("web", 1, "hi")
    container = web["spec"]["template"]["spec"]["containers"][0]
    container["command"] = [sys.executable, "-c", "print('hello from the pod', flush=True)\n" + APP]
    kube.create(web)
    kube.create(SERVICE)
    subsets = wait_until(
        lambda: [
            s
            for s in (kube.get("v1", "Endpoints", "default", "web") or {}).get("subsets") or []
            if s.get("addresses")
        ],
        timeout=60,
        message="a ready endpoint of web",
    )
    return str(subsets[0]["addresses"][0]["targetRef"]["name"])


def test_up_detached_status_from_any_directory_and_down(tmp_path):
    require_binary("prometheus")
    home, elsewhere = tmp_path / "home", tmp_path / "elsewhere"
    home.mkdir(), elsewhere.mkdir()
    per_user = {"XDG_STATE_HOME": str(tmp_path / "xdg"), "KUBECONFIG": ""}
    state_dir = tmp_path / "xdg" / "mlrollouts"
    assert cli("status", cwd=elsewhere, env=per_user).returncode == 1
    up = cli("up", "--detach", cwd=home, env=per_user)
    try:
        assert up.returncode == 0, up.stderr
        assert f"kubeconfig:   {state_dir / 'kubeconfig'}" in up.stdout and "Prometheus:" in up.stdout
        with SyncKube.from_environment(str(state_dir / "kubeconfig")) as kube:
            greeting_web(kube)
            ready = [
                s for s in kube.get("v1", "Endpoints", "default", "web")["subsets"] if s.get("addresses")
            ]
        url = f"http://{ready[0]['addresses'][0]['ip']}:{ready[0]['ports'][0]['port']}"
        status = cli("status", cwd=elsewhere, env=per_user, timeout=60)
        assert status.returncode == 0, status.stderr
        assert "API server:" in status.stdout
        assert any(
            line.split()[-1:] == [url] and "default/web" in line for line in status.stdout.splitlines()
        ), status.stdout
        # another user's default, but KUBECONFIG names this playground: found from it
        by_kubeconfig = {
            "XDG_STATE_HOME": str(tmp_path / "other"),
            "KUBECONFIG": str(state_dir / "kubeconfig"),
        }
        assert url in cli("status", cwd=elsewhere, env=by_kubeconfig, timeout=60).stdout
        again = cli("up", "--detach", cwd=elsewhere, env=per_user, timeout=60)
        assert "already running" in again.stdout
    finally:
        down = cli("down", cwd=elsewhere, env=per_user, timeout=90)
    assert down.returncode == 0 and "playground stopped" in down.stdout, down.stderr
    assert cli("status", cwd=home, env=per_user).returncode == 1


def test_kubectl_logs_and_explain_against_the_playground(tmp_path):
    """`kubectl logs` reads what the process kubelet kept of a pod; `kubectl explain` reads the
    emulator's OpenAPI v3 documents (a CRD's schema and a built-in kind)."""
    kubectl = require_binary("kubectl")
    require_binary("prometheus")
    from mlrollouts.local.playground import Playground

    with Playground(tmp_path / "state") as playground:
        env = {**os.environ, "KUBECONFIG": str(playground.kubeconfig)}

        def run(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run([kubectl, *args], capture_output=True, text=True, env=env, timeout=60)

        with SyncKube.from_environment(str(playground.kubeconfig)) as kube:
            pod = greeting_web(kube)
        logs = run("logs", pod)
        assert logs.returncode == 0 and logs.stdout.splitlines()[0] == "hello from the pod", logs.stderr
        assert run("logs", pod, "-c", "nope").returncode != 0
        assert run("logs", "deploy/web").stdout.startswith("hello from the pod")
        explain = run("explain", "modeldeployment.spec.rollout")
        assert explain.returncode == 0, explain.stderr
        assert "KIND:       ModelDeployment" in explain.stdout and "steps\t<[]Object>" in explain.stdout
        assert "FIELD: spec <Object>" in run("explain", "deployment.spec").stdout
