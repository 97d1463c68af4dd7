"""The chart's operator settings reach the real operator process through its environment: the allowed
serving images, the log format and level, and a namespaced watch that needs no cluster-wide scans."""

from __future__ import annotations

import json
import os
import re
import sys
import time
import uuid
from pathlib import Path

import pytest
from harness import Cluster
from rollout_support import manifest, wait_status

from support import Proc

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_disallowed_image_is_not_rolled_out_and_logs_are_json(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path)
    operator = None
    try:
        ns = f"t-{uuid.uuid4().hex[:8]}"
        cluster.create_namespace(ns)
        env = {
            **os.environ,
            "KUBECONFIG": str(cluster.kubeconfig),
            "PYTHONUNBUFFERED": "1",
            "MLROLLOUTS_ALLOWED_IMAGES": "registry.example.com/models/*",
            "MLROLLOUTS_LOG_FORMAT": "json",
            "MLROLLOUTS_LOG_LEVEL": "INFO",
            "MLROLLOUTS_PROMETHEUS_TIMEOUT": "3s",
        }
        operator = Proc(
            [
                sys.executable,
                "-m",
                "mlrollouts.cli.main",
                "operator",
                "run",
                "--namespace",
                ns,
                "--poll",
                "0.3",
            ],
            tmp_path / f"operator-{time.monotonic_ns()}.log",
            env=env,
        )
        allowed = manifest("ok", "file:///models/ok-1.onnx", steps=[])
        allowed["spec"]["serving"]["image"] = "registry.example.com/models/serving:2"
        allowed["spec"]["rollout"] = {"strategy": "Immediate"}
        refused = manifest("bad", "file:///models/bad-1.onnx", steps=[])
        refused["spec"]["serving"]["image"] = "docker.io/someone/serving:latest"
        refused["spec"]["rollout"] = {"strategy": "Immediate"}
        cluster.create(ns, allowed)
        cluster.create(ns, refused)
        wait_status(
            cluster, ns, "ok", lambda s: s.get("phase") == "Healthy", 60, "allowed image Healthy", operator
        )
        status = wait_status(
            cluster, ns, "bad", lambda s: s.get("phase") == "Degraded", 30, "refused", operator
        )
        conditions = {c["type"]: c for c in status["conditions"]}
        assert conditions["Degraded"]["status"] == "True"
        assert conditions["Degraded"]["reason"] == "ImageNotAllowed"
        assert "docker.io/someone/serving:latest" in conditions["Degraded"]["message"]
        assert "spec.serving.image" in conditions["Degraded"]["message"]
        assert conditions["Ready"]["status"] == "False"
        deployments = cluster.objects(f"/apis/apps/v1/namespaces/{ns}/deployments")
        names = {d["metadata"]["name"] for d in deployments}
        assert not any(n.startswith("bad") for n in names), names
        assert any(n.startswith("ok-") for n in names), names
        # the operator logs one JSON object a line, none in the text format
        lines = [line for line in operator.output().splitlines() if line.strip()]
        records = [json.loads(line) for line in lines if line.startswith("{")]
        assert records and all("message" in r for r in records), lines[:5]
        assert not [line for line in lines if re.match(r"^\[\d{4}-\d\d-\d\d", line)], lines[:5]
    finally:
        if operator is not None:
            operator.stop()
        cluster.stop()
