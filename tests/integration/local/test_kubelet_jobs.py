"""The process kubelet as the Job controller: a Job's pod runs to completion, failures count against
``backoffLimit`` (a restarted container with ``OnFailure``, a new pod with ``Never``),
``activeDeadlineSeconds`` ends a Job that runs too long, ``ttlSecondsAfterFinished`` deletes it, and
the status carries the conditions Kubernetes writes."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from mlrollouts.controller.kube import SyncKube
from support import wait_until
from support.kubelet import running_kubelet

pytestmark = pytest.mark.integration


@pytest.fixture
def kube(kubeconfig: Path, tmp_path: Path):
    with running_kubelet(kubeconfig, tmp_path / "work") as (kube, _):
        yield kube


def job(name: str, code: str, restart: str = "OnFailure", **spec) -> dict:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            **spec,
            "template": {
                "spec": {
                    "restartPolicy": restart,
                    "containers": [
                        {"name": "work", "image": "python:3.11", "command": [sys.executable, "-c", code]}
                    ],
                }
            },
        },
    }


def ended(kube: SyncKube, name: str) -> dict | None:
    """The Job's Complete or Failed condition, once it has one."""
    status = (kube.get("batch/v1", "Job", "default", name) or {}).get("status") or {}
    for condition in status.get("conditions") or []:
        if condition["type"] in ("Complete", "Failed") and condition["status"] == "True":
            return condition
    return None


def job_pods(kube: SyncKube, name: str) -> list[dict]:
    return [p for p in kube.list("v1", "Pod", "default") if p["metadata"]["labels"].get("job-name") == name]


def test_a_job_that_succeeds_is_complete_and_deleted_after_its_ttl(kube):
    kube.create(job("ok", "print('done')", ttlSecondsAfterFinished=2))
    wait_until(lambda: ended(kube, "ok"), timeout=30, message="the Job to end")
    status = kube.get("batch/v1", "Job", "default", "ok")["status"]
    assert ended(kube, "ok")["type"] == "Complete"
    assert status["succeeded"] == 1 and status["failed"] == 0 and status["active"] == 0
    assert status["completionTime"] and status["startTime"]
    assert {c["type"] for c in status["conditions"]} == {"SuccessCriteriaMet", "Complete"}
    (pod,) = job_pods(kube, "ok")
    assert pod["status"]["phase"] == "Succeeded"
    assert pod["metadata"]["ownerReferences"][0]["kind"] == "Job"
    wait_until(lambda: kube.get("batch/v1", "Job", "default", "ok") is None, timeout=30, message="the TTL")


def test_failed_pods_beyond_the_backoff_limit_fail_the_job_with_restart_policy_never(kube):
    kube.create(job("never", "raise SystemExit(3)", restart="Never", backoffLimit=1))
    wait_until(lambda: ended(kube, "never"), timeout=30, message="the Job to end")
    condition = ended(kube, "never")
    assert (condition["type"], condition["reason"]) == ("Failed", "BackoffLimitExceeded")
    status = kube.get("batch/v1", "Job", "default", "never")["status"]
    assert status["failed"] == 2 and status["succeeded"] == 0
    pods = job_pods(kube, "never")
    assert len(pods) == 2, "Never: a new pod replaces the failed one, up to backoffLimit + 1 pods"
    assert all(p["status"]["phase"] == "Failed" for p in pods)


def test_a_failing_container_restarts_in_its_pod_with_on_failure(kube):
    kube.create(job("again", "raise SystemExit(1)", backoffLimit=0))
    wait_until(lambda: ended(kube, "again"), timeout=30, message="the Job to end")
    assert ended(kube, "again")["reason"] == "BackoffLimitExceeded"
    wait_until(
        lambda: not job_pods(kube, "again"), timeout=30, message="the running pod of a failed Job to go"
    )
    status = kube.get("batch/v1", "Job", "default", "again")["status"]
    assert status["failed"] == 1, "OnFailure: one restart of the container in its pod, still counted"
    assert status["active"] == 0


def test_a_job_running_past_its_deadline_fails_and_its_pod_is_stopped(kube):
    kube.create(job("slow", "import time; time.sleep(600)", activeDeadlineSeconds=1))
    wait_until(lambda: ended(kube, "slow"), timeout=30, message="the deadline")
    assert ended(kube, "slow")["reason"] == "DeadlineExceeded"
    wait_until(
        lambda: all(p["status"].get("phase") != "Running" for p in job_pods(kube, "slow")),
        timeout=30,
        message="the Job's pod to stop",
    )
