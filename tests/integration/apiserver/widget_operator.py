"""A small kopf operator for the emulator's tests: a Widget gets a child ConfigMap and a status.

Every handler call is appended as a JSON line to the file named by ``WIDGET_EVENTS``.
"""

from __future__ import annotations

import json
import os

import kopf
import kubernetes


def record(event: str, name: str, **extra: object) -> None:
    with open(os.environ["WIDGET_EVENTS"], "a", encoding="utf-8") as fh:
        fh.write(json.dumps({"event": event, "name": name, **extra}) + "\n")


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: object) -> None:
    kubernetes.config.load_kube_config()
    settings.persistence.finalizer = "example.com/widget-operator"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="example.com")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix="example.com")
    settings.watching.server_timeout = 30


@kopf.on.create("example.com", "v1", "widgets")
def create_fn(
    name: str, namespace: str, spec: kopf.Spec, body: kopf.Body, patch: kopf.Patch, **_: object
) -> None:
    child = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": f"{name}-child"},
        "data": {"size": str(spec.get("size"))},
    }
    kopf.adopt(child, owner=body)
    kubernetes.client.CoreV1Api().create_namespaced_config_map(namespace, child)
    patch.status["phase"] = "Created"
    record("create", name)


@kopf.on.update("example.com", "v1", "widgets")
def update_fn(name: str, diff: kopf.Diff, patch: kopf.Patch, **_: object) -> None:
    patch.status["phase"] = "Updated"
    record("update", name, fields=[".".join(d[1]) for d in diff])


@kopf.on.delete("example.com", "v1", "widgets")
def delete_fn(name: str, **_: object) -> None:
    record("delete", name)
