"""A real kopf operator process against the emulator over HTTP."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from support import free_port, running, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]

WIDGETS = "/apis/example.com/v1/namespaces/default/widgets"
CMS = "/api/v1/namespaces/default/configmaps"
OPERATOR = Path(__file__).with_name("widget_operator.py")


def test_kopf_operator_adopts_children_and_sees_each_change_once(http, apiserver, widget_crd, tmp_path):
    events_file = tmp_path / "events.jsonl"
    events_file.touch()

    def events() -> list[dict]:
        return [json.loads(line) for line in events_file.read_text().splitlines()]

    port = free_port()
    argv = [
        sys.executable,
        "-m",
        "kopf",
        "run",
        "--standalone",
        "--namespace=default",
        f"--liveness=http://127.0.0.1:{port}/healthz",
        str(OPERATOR),
    ]
    env = {"KUBECONFIG": str(apiserver.kubeconfig_path), "WIDGET_EVENTS": str(events_file)}
    with running(
        argv, tmp_path / "operator.log", env=env, ready_url=f"http://127.0.0.1:{port}/healthz"
    ) as operator:
        body = {
            "apiVersion": "example.com/v1",
            "kind": "Widget",
            "metadata": {"name": "w1"},
            "spec": {"size": 1},
        }
        created = http.post(WIDGETS, json=body).json()
        wait_until(
            lambda: http.get(f"{WIDGETS}/w1").json().get("status", {}).get("phase") == "Created",
            timeout=30,
            message="the operator to set the status",
        )
        child = http.get(f"{CMS}/w1-child").json()
        [owner_ref] = child["metadata"]["ownerReferences"]
        assert owner_ref["uid"] == created["metadata"]["uid"] and owner_ref["controller"] is True
        widget = http.get(f"{WIDGETS}/w1").json()
        assert "example.com/widget-operator" in widget["metadata"]["finalizers"]
        assert widget["metadata"]["generation"] == 1  # status and annotation writes do not count

        http.patch(
            f"{WIDGETS}/w1",
            json={"spec": {"size": 2}},
            headers={"Content-Type": "application/merge-patch+json"},
        )
        wait_until(
            lambda: any(e["event"] == "update" for e in events()), timeout=30, message="the update handler"
        )
        wait_until(
            lambda: http.get(f"{WIDGETS}/w1").json().get("status", {}).get("phase") == "Updated",
            timeout=30,
            message="the status after the update",
        )

        http.delete(f"{WIDGETS}/w1")
        wait_until(
            lambda: http.get(f"{WIDGETS}/w1").status_code == 404,
            timeout=30,
            message="the operator to release its finalizer",
        )
        wait_until(
            lambda: http.get(f"{CMS}/w1-child").status_code == 404,
            timeout=30,
            message="the child to be garbage-collected",
        )
        assert operator.alive(), operator.output()[-3000:]
    log = (tmp_path / "operator.log").read_text()
    assert "Traceback" not in log, log[-3000:]
    assert [(e["event"], e["name"]) for e in events()] == [
        ("create", "w1"),
        ("update", "w1"),
        ("delete", "w1"),
    ]
    assert events()[1]["fields"] == ["spec.size"]
    status_writes = [
        r for r in apiserver.audit if r.get("resource") == "widgets" and r.get("subresource") == "status"
    ]
    assert status_writes, "kopf writes the status through the status subresource"
