"""``load`` rollout hooks with the real operator: the candidate's own model server receives the hook's
requests during the steps the hook names, none during the others, and none once the rollout is
promoted or aborted.

The operator (kopf) runs against the API emulator over HTTP; the process kubelet runs the real model
servers and plays kube-proxy for the operator, so the load reaches ``http://<name>-<rev>.<ns>.svc``
as it would in a cluster. What the candidate received is read from its own
``mlserving_requests_total`` counter.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from mlrollouts.api.crd import all_crds
from mlrollouts.controller.kube import SyncKube
from mlrollouts.core.names import ACTION_ANNOTATION
from mlrollouts.local.apiserver.testing import apiserver, kubeconfig  # noqa: F401
from mlrollouts.local.kubelet import ProcessKubelet
from support import PYTHON, Proc, free_port, wait_until
from support.models import sklearn_to_onnx

pytestmark = [pytest.mark.integration, pytest.mark.slow]

NS = "default"
NAME = "loaded"
MD = f"/apis/mlrollouts.io/v1alpha1/namespaces/{NS}/modeldeployments"
RATE = 20
ROW = [5.1, 3.5, 1.4, 0.2]
PROXY_LOGGER = "mlrollouts.kubelet.proxy"
INFER = {"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": ROW}]}


class ProxyLog(logging.Handler):
    """The requests the kubelet's service proxy (the playground's kube-proxy) forwarded or refused,
    from its own request log: it outlives the candidate's pods, which a rollback removes."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []
        self._logger = logging.getLogger(PROXY_LOGGER)

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())

    def requests_to(self, service: str, path: str) -> int:
        return sum(1 for line in list(self.lines) if f"//{service}." in line and path in line)

    def __enter__(self) -> ProxyLog:
        self._level = self._logger.level
        self._logger.setLevel(logging.DEBUG)
        self._logger.addHandler(self)
        return self

    def __exit__(self, *_: object) -> None:
        self._logger.removeHandler(self)
        self._logger.setLevel(self._level)


@dataclass
class ControlPlane:
    api: httpx.Client
    proxy: str
    """The kubelet's service proxy: how this test, like the operator, reaches Services by name."""
    operator: Proc
    models: Path
    proxy_log: ProxyLog

    def status(self) -> dict[str, Any]:
        return self.api.get(f"{MD}/{NAME}").json().get("status") or {}

    def wait_status(self, predicate, timeout: float, what: str) -> dict[str, Any]:
        def check() -> dict[str, Any] | None:
            status = self.status()
            return status if predicate(status) else None

        try:
            return wait_until(check, timeout=timeout, interval=0.1, message=what)
        except AssertionError as exc:
            raise AssertionError(
                f"{exc}\nstatus: {self.status()}\noperator log tail:\n{self.operator.output()[-4000:]}"
            ) from None

    def served(self, revision: str) -> int:
        """Requests the revision's model server has answered (its own counter, read through its Service)."""
        with httpx.Client(proxy=self.proxy, timeout=5) as client:
            text = client.get(f"http://{NAME}-{revision}.{NS}.svc:80/metrics").raise_for_status().text
        return int(
            sum(
                sample.value
                for family in text_string_to_metric_families(text)
                for sample in family.samples
                if sample.name == "mlserving_requests_total" and sample.labels.get("revision") == revision
            )
        )

    def served_ok(self, revision: str) -> bool:
        try:
            self.served(revision)
        except httpx.HTTPError:
            return False
        return True


@pytest.fixture
def plane(apiserver, kubeconfig: Path, tmp_path: Path) -> Iterator[ControlPlane]:  # noqa: F811
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    models = tmp_path / "models"
    models.mkdir()
    x, y = load_iris(return_X_y=True)
    (models / "v1.onnx").write_bytes(sklearn_to_onnx(LogisticRegression(max_iter=500).fit(x, y)))
    shutil.copy(models / "v1.onnx", models / "v2.onnx")  # another URI: another revision

    api = httpx.Client(base_url=apiserver.url, timeout=10)
    for crd in all_crds():
        api.post("/apis/apiextensions.k8s.io/v1/customresourcedefinitions", json=crd).raise_for_status()
    wait_until(lambda: api.get(MD).status_code == 200, timeout=10, message="CRD served")
    kube = SyncKube.from_environment(str(kubeconfig))
    kubelet = ProcessKubelet(
        kube,
        tmp_path / "pods",
        kubeconfig=str(kubeconfig),
        poll_interval=0.1,
        service_proxy_port=0,
        # no cluster DNS: routers reach Services through their Endpoints
        extra_env={"MLROUTER_RESOLVE_ENDPOINTS": "true"},
    )
    assert kubelet.service_proxy is not None
    thread = threading.Thread(target=kubelet.run, daemon=True)
    thread.start()
    argv = [PYTHON, "-m", "mlrollouts.cli.main", "operator", "run", "--tick", "0.25", "--poll", "0.3"]
    argv += ["--metrics-port", str(free_port())]
    env = {
        **os.environ,
        "KUBECONFIG": str(kubeconfig),
        "PYTHONUNBUFFERED": "1",
        # no cluster DNS: the operator's load reaches the Services through the kubelet's proxy
        **kubelet.service_proxy.environment(),
    }
    operator = Proc(argv, tmp_path / "operator.log", env=env)
    try:
        with ProxyLog() as proxy_log:
            yield ControlPlane(api, kubelet.service_proxy.url, operator, models, proxy_log)
    finally:
        operator.stop()
        kubelet.stop()
        thread.join(timeout=20)
        kube.close()
        api.close()


def loaded(
    models: Path, steps: list[dict[str, Any]], hook: dict[str, Any], provider: str = "Service"
) -> dict[str, Any]:
    return {
        "apiVersion": "mlrollouts.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": NAME, "namespace": NS},
        "spec": {
            "model": {"uri": (models / "v1.onnx").as_uri(), "format": "onnx"},
            "serving": {"replicas": 1},
            "traffic": {"provider": provider},
            "rollout": {
                "strategy": "Canary",
                "steps": steps,
                "scaleDownDelay": "60s",
                "hooks": [{"name": "warm-up", "type": "load", "rate": RATE, "body": INFER, **hook}],
            },
        },
    }


def start_candidate(plane: ControlPlane, manifest: dict[str, Any]) -> str:
    """Create the resource, wait for its first revision, roll out v2; the candidate's revision."""
    plane.api.post(MD, json=manifest).raise_for_status()
    first = plane.wait_status(lambda s: s.get("phase") == "Healthy", 90, "first revision Healthy")
    model = {**manifest["spec"]["model"], "uri": (plane.models / "v2.onnx").as_uri()}
    plane.api.patch(
        f"{MD}/{NAME}",
        json={"spec": {"model": model}},
        headers={"Content-Type": "application/merge-patch+json"},
    ).raise_for_status()
    status = plane.wait_status(
        lambda s: s.get("candidateRevision") not in (None, first["stableRevision"]), 30, "a candidate"
    )
    return str(status["candidateRevision"])


def samples_while(plane: ControlPlane, revision: str, predicate, interval: float = 0.3) -> list[int]:
    """The candidate's counter, read again and again while the status satisfies ``predicate``."""
    seen = []
    while predicate(plane.status()):
        seen.append(plane.served(revision))
        time.sleep(interval)
    return seen


def test_load_reaches_the_candidate_during_its_steps_only(plane: ControlPlane) -> None:
    steps = [
        {"weight": 20, "duration": "4s"},
        {"weight": 50, "duration": "4s"},
        {"weight": 80, "duration": "3s"},
    ]
    candidate = start_candidate(plane, loaded(plane.models, steps, {"steps": [2]}))

    def at_step(index: int):
        return lambda s: s.get("phase") == "Progressing" and s.get("currentStep") == index

    plane.wait_status(at_step(0), 60, "step 1")
    wait_until(lambda: plane.served_ok(candidate), timeout=60, message="candidate server reachable")
    during_first = samples_while(plane, candidate, at_step(0))
    assert during_first and set(during_first) == {0}, f"load during step 1: {during_first}"

    during_second = samples_while(plane, candidate, at_step(1))
    assert len(during_second) >= 2, during_second
    after_second = plane.served(candidate)
    # the step lasts 4 s at 20 requests a second: at least one second's worth must have arrived
    assert after_second >= RATE, f"only {after_second} load requests during step 2"
    print(f"load hook: {after_second} requests during step 2 (4 s at {RATE}/s)")

    during_third = samples_while(plane, candidate, at_step(2))
    assert during_third, "step 3 passed unobserved"
    # what was on its way when step 2 ended may land in the first moments of step 3; then nothing
    assert len(set(during_third[1:])) <= 1, f"load during step 3: {during_third}"

    done = plane.wait_status(
        lambda s: s.get("phase") == "Healthy" and s.get("stableRevision") == candidate, 60, "promoted"
    )
    assert done["stableRevision"] == candidate
    settled = plane.served(candidate)
    time.sleep(1.5)
    assert plane.served(candidate) == settled == during_third[-1], "load after step 2"


def test_load_stops_when_the_rollout_is_aborted(plane: ControlPlane) -> None:
    steps = [{"weight": 20, "duration": "120s"}, {"weight": 50, "duration": "120s"}]
    candidate = start_candidate(plane, loaded(plane.models, steps, {}))  # every step
    plane.wait_status(lambda s: s.get("currentStep") == 0 and s.get("phase") == "Progressing", 60, "step 1")
    wait_until(lambda: plane.served_ok(candidate), timeout=60, message="candidate server reachable")
    wait_until(lambda: plane.served(candidate) >= RATE, timeout=30, message="load reaching the candidate")

    def sent() -> int:
        return plane.proxy_log.requests_to(f"{NAME}-{candidate}", f"/v2/models/{NAME}/infer")

    assert sent() >= RATE  # the proxy's log sees the load the candidate counts
    plane.api.patch(
        f"{MD}/{NAME}",
        json={"metadata": {"annotations": {ACTION_ANNOTATION: "abort"}}},
        headers={"Content-Type": "application/merge-patch+json"},
    ).raise_for_status()
    aborted = plane.wait_status(lambda s: s.get("failedRevision") == candidate, 30, "aborted")
    assert aborted["phase"] == "Degraded", aborted
    time.sleep(0.5)  # what was on its way when the pass stopped the load
    stopped = sent()
    time.sleep(2.0)  # 40 more requests at the hook's rate, had it gone on
    assert sent() == stopped, "load went on after the abort"
    print(f"load hook: {stopped} requests before the abort")
