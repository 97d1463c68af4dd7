"""The operator process reconciles a ModelDeployment in the API emulator: children, status, events."""

from __future__ import annotations

import pytest

from support import wait_until

pytestmark = pytest.mark.integration


def manifest(name: str, uri: str, **rollout) -> dict:
    return {
        "apiVersion": "mlrollouts.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": name},
        "spec": {
            "model": {"uri": uri, "format": "onnx"},
            "serving": {"replicas": 2},
            "rollout": {"strategy": "Immediate", "scaleDownDelay": "1s", **rollout},
        },
    }


def test_first_revision_becomes_healthy_with_children_owned(cluster, namespace, operator_factory):
    op = operator_factory()
    md = cluster.create(namespace, manifest("iris", "file:///models/iris-1.onnx"))
    status = wait_until(
        lambda: (s := cluster.status(namespace, "iris")).get("phase") == "Healthy" and s,
        timeout=30,
        message=f"Healthy\n{op.output()[-3000:]}",
    )
    rev = status["stableRevision"]
    deps = cluster.objects(f"/apis/apps/v1/namespaces/{namespace}/deployments")
    names = {d["metadata"]["name"] for d in deps}
    assert {f"iris-{rev}", "iris-router"} <= names
    dep = next(d for d in deps if d["metadata"]["name"] == f"iris-{rev}")
    assert dep["metadata"]["ownerReferences"][0]["uid"] == md["metadata"]["uid"]
    assert dep["spec"]["replicas"] == 2
    cms = cluster.objects(f"/api/v1/namespaces/{namespace}/configmaps")
    assert any(c["metadata"]["name"] == "iris-routes" for c in cms)
    reasons = {e["reason"] for e in cluster.events(namespace, "iris")}
    assert {"RevisionCreated", "Available"} <= reasons
    conditions = {c["type"]: c for c in status["conditions"]}
    assert conditions["Ready"]["status"] == "True"
    # an immediate switch to a new model
    cluster.patch(namespace, "iris", {"spec": {"model": {"uri": "file:///models/iris-2.onnx"}}})
    status = wait_until(
        lambda: (
            (s := cluster.status(namespace, "iris")).get("stableRevision") not in (None, rev)
            and s.get("phase") == "Healthy"
            and s
        ),
        timeout=30,
        message=f"new revision Healthy\n{op.output()[-3000:]}",
    )
    new_rev = status["stableRevision"]
    wait_until(
        lambda: (
            cluster.request("GET", f"/apis/apps/v1/namespaces/{namespace}/deployments/iris-{rev}")["spec"][
                "replicas"
            ]
            == 0
        ),
        timeout=20,
        message="old revision scaled down",
    )
    assert status["weightsSummary"] == f"{new_rev}:100"
