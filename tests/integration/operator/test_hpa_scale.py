"""An autoscaler scales a ModelDeployment through its scale subresource, as a HorizontalPodAutoscaler
does, and the real operator splits those replicas between the stable and the candidate revision by
their traffic weights."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
import yaml
from harness import MD_PATH, Cluster, start_operator
from rollout_support import revision_of, wait_status, with_model

from support import wait_until

ROOT = Path(__file__).resolve().parents[3]
pytestmark = [pytest.mark.integration, pytest.mark.slow]


def model_deployment(uri: str) -> dict:
    return {
        "apiVersion": "mlrollouts.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "scaled"},
        "spec": {
            "model": {"uri": uri, "format": "onnx"},
            "serving": {"replicas": 4},
            "rollout": {"strategy": "Canary", "steps": [{"weight": 25, "duration": "1h"}]},
        },
    }


def scale_to(cluster: Cluster, ns: str, replicas: int) -> dict:
    """What the HPA controller sends: a merge patch of the Scale object."""
    path = f"{MD_PATH.format(ns=ns)}/scaled/scale"
    return cluster.request("PATCH", path, {"spec": {"replicas": replicas}}, "application/merge-patch+json")


def replicas_of(cluster: Cluster, ns: str, revision: str) -> int | None:
    path = f"/apis/apps/v1/namespaces/{ns}/deployments/scaled-{revision}"
    return cluster.request("GET", path)["spec"]["replicas"]


def wait_split(cluster: Cluster, ns: str, expected: dict[str, int], operator) -> None:
    def check():
        seen = {rev: replicas_of(cluster, ns, rev) for rev in expected}
        return seen == expected or None

    try:
        wait_until(check, timeout=30, interval=0.2, message=f"replicas {expected}")
    except AssertionError as exc:
        seen = {rev: replicas_of(cluster, ns, rev) for rev in expected}
        raise AssertionError(f"{exc}; seen {seen}\n{operator.output()[-3000:]}") from None


def test_hpa_scale_patch_is_split_between_stable_and_candidate(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path)
    operator, _ = start_operator(cluster, tmp_path, None)
    try:
        ns = f"t-{uuid.uuid4().hex[:8]}"
        cluster.create_namespace(ns)
        first = model_deployment("file:///models/scaled-1.onnx")
        stable = revision_of(first)
        cluster.create(ns, first)
        wait_status(cluster, ns, "scaled", lambda s: s.get("phase") == "Healthy", 60, "Healthy", operator)
        status = wait_status(cluster, ns, "scaled", lambda s: s.get("replicas") == 4, 20, "4 pods", operator)
        scale = cluster.request("GET", f"{MD_PATH.format(ns=ns)}/scaled/scale")
        assert scale["spec"]["replicas"] == 4 and scale["status"]["replicas"] == 4
        assert scale["status"]["selector"] == status["selector"]
        assert "mlrollouts.io/owner=ModelDeployment.scaled" in status["selector"].split(",")

        # the example HPA, aimed at this resource, is accepted as written
        hpa = yaml.safe_load((ROOT / "examples/canary/hpa.yaml").read_text())
        hpa["metadata"]["namespace"], hpa["spec"]["scaleTargetRef"]["name"] = ns, "scaled"
        cluster.request("POST", f"/apis/autoscaling/v2/namespaces/{ns}/horizontalpodautoscalers", hpa)

        assert scale_to(cluster, ns, 8)["spec"]["replicas"] == 8
        wait_split(cluster, ns, {stable: 8}, operator)
        assert cluster.get(ns, "scaled")["spec"]["serving"]["replicas"] == 8
        assert cluster.status(ns, "scaled").get("candidateRevision") is None  # scaling is no new revision

        second = with_model(cluster.get(ns, "scaled"), "file:///models/scaled-2.onnx")
        candidate = revision_of(second)
        cluster.patch(ns, "scaled", {"spec": {"model": second["spec"]["model"]}})
        wait_status(
            cluster,
            ns,
            "scaled",
            lambda s: (
                {"revision": candidate, "desired": 25}
                in [{k: w[k] for k in ("revision", "desired")} for w in s.get("weights", [])]
            ),
            60,
            "candidate at 25 %",
            operator,
        )
        wait_split(cluster, ns, {stable: 6, candidate: 2}, operator)  # 25 % of 8 pods
        scale_to(cluster, ns, 12)
        wait_split(cluster, ns, {stable: 9, candidate: 3}, operator)
        wait_status(cluster, ns, "scaled", lambda s: s.get("replicas") == 12, 20, "12 pods", operator)
    finally:
        operator.stop()
        cluster.stop()
