"""The local playground for fault tests of the data plane: everything real (API emulator, process
kubelet running the model servers and the router, Prometheus, the kopf operator), one playground per
test module and one namespace per test.

``FaultRun`` follows one ModelDeployment: it samples its status and the route table every 0.1 s
(so a weight the router was given for a moment is seen), and sends inference requests through the
router the whole time (every answer is counted by the variant that served it and its status code).
"""

from __future__ import annotations

import contextlib
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from mlrollouts.controller.kube import KubeError, SyncKube
from mlrollouts.local.demo_scenario import TrafficGenerator
from mlrollouts.local.playground import Playground
from support import require_binary, wait_until
from support.models import IrisModels, train_iris_models

MD = ("mlrollouts.io/v1alpha1", "ModelDeployment")
IRIS_ROW = {"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [5.1, 3.5, 1.4, 0.2]}]}
VARIANT_HEADER = "x-mlrollouts-variant"


@dataclass
class World:
    playground: Playground
    kube: SyncKube
    models: IrisModels


@contextlib.contextmanager
def fault_playground(root: Path) -> Iterator[World]:
    """A playground whose operator lets model servers fetch from loopback (the tests' HTTP servers)."""
    require_binary("prometheus")
    models = train_iris_models(root / "models")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("MLROLLOUTS_ALLOW_PRIVATE_MODEL_HOSTS", "true")  # the operator inherits it
        playground = Playground(root / "state", operator_args=["--poll", "0.3"]).start()
        try:
            with SyncKube.from_environment(str(playground.kubeconfig)) as kube:
                yield World(playground, kube, models)
        finally:
            playground.stop()


def canary(name: str, uri: str, **serving: Any) -> dict[str, Any]:
    """A Router canary with one 50 % step and a short progress deadline; no checks (the candidate
    never gets as far as an analysis)."""
    return {
        "apiVersion": "mlrollouts.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": name},
        "spec": {
            "model": {"uri": uri, "format": "onnx"},
            "serving": {"replicas": 1, **serving},
            "rollout": {
                "strategy": "Canary",
                "steps": [{"weight": 50, "duration": "2s"}],
                "progressDeadline": "8s",
                "scaleDownDelay": "1s",
            },
        },
    }


def route_weights(kube: SyncKube, namespace: str, name: str) -> dict[str, float]:
    """The weight of each variant (revision) in the route table the router reads."""
    configmap = kube.get("v1", "ConfigMap", namespace, f"{name}-routes") or {}
    table = yaml.safe_load((configmap.get("data") or {}).get("routes.yaml") or "{}") or {}
    return {v["name"]: v["weight"] for route in table.get("routes") or [] for v in route["variants"]}


@dataclass
class FaultRun:
    """One ModelDeployment under a fault: its status and route table sampled, traffic through it."""

    kube: SyncKube
    namespace: str
    name: str
    samples: list[tuple[dict[str, Any], dict[str, float]]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    traffic: TrafficGenerator | None = None

    @classmethod
    @contextlib.contextmanager
    def of(cls, world: World, manifest: dict[str, Any]) -> Iterator[FaultRun]:
        namespace = f"t-{uuid.uuid4().hex[:8]}"
        world.kube.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
        manifest = {**manifest, "metadata": {**manifest["metadata"], "namespace": namespace}}
        world.kube.create(manifest)
        run = cls(world.kube, namespace, manifest["metadata"]["name"])
        try:
            yield run
        finally:
            run.stop()

    def status(self) -> dict[str, Any]:
        return (self.kube.get(*MD, self.namespace, self.name) or {}).get("status") or {}

    def wait(self, predicate, timeout: float, what: str) -> dict[str, Any]:
        def check() -> dict[str, Any] | None:
            status = self.status()
            return status if predicate(status) else None

        try:
            return wait_until(check, timeout=timeout, interval=0.2, message=what)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\nstatus: {self.status()}") from None

    def patch_model(self, uri: str) -> None:
        self.kube.merge_patch(*MD, self.namespace, self.name, {"spec": {"model": {"uri": uri}}})

    def patch_serving(self, serving: dict[str, Any]) -> None:
        self.kube.merge_patch(*MD, self.namespace, self.name, {"spec": {"serving": serving}})

    def start(self) -> None:
        """Sample status and route table, and send traffic through the router, until ``stop``."""
        self.traffic = TrafficGenerator(
            self.kube,
            self.namespace,
            self.name,
            f"/v2/models/{self.name}/infer",
            [IRIS_ROW],
            lambda r: (r.headers.get(VARIANT_HEADER, "?"), r.status_code),
            rate=20.0,
        )
        self.traffic.start()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.wait(0.1):
            with contextlib.suppress(KubeError, httpx.HTTPError, KeyError, ValueError):
                self.samples.append((self.status(), route_weights(self.kube, self.namespace, self.name)))

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self.traffic is not None:
            self.traffic.stop()

    def answers(self) -> int:
        return sum(self.traffic.snapshot().values()) if self.traffic else 0

    def assert_stable_served_everything(self, stable: str, candidate: str) -> None:
        """Every request got a 200 from the stable; the route never gave the candidate any weight."""
        assert self.traffic is not None
        counts = self.traffic.snapshot()
        assert self.traffic.errors == 0, list(self.traffic.failures)
        assert counts and set(counts) == {(stable, 200)}, (counts, list(self.traffic.failures))
        assert len(self.samples) > 20, "the route table was sampled throughout"
        for status, routed in self.samples:
            assert routed.get(candidate, 0) == 0 and routed.get(stable) == 100, routed
            desired = {w["revision"]: w["desired"] for w in status.get("weights") or []}
            assert desired.get(candidate, 0) == 0, status.get("weights")
            assert status.get("stableRevision") == stable, status

    def events(self) -> list[dict[str, Any]]:
        return [
            e
            for e in self.kube.list("v1", "Event", self.namespace)
            if e["involvedObject"]["name"] == self.name
        ]


def condition(status: dict[str, Any], kind: str) -> dict[str, Any]:
    return next((c for c in status.get("conditions") or [] if c["type"] == kind), {})


def assert_rolled_back(run: FaultRun, stable: str, candidate: str, *why: str) -> dict[str, Any]:
    """Degraded by the progress deadline, the candidate rolled back, and each of ``why`` said in
    the Degraded condition, the status message, the revision's history and the RolledBack event."""
    status = run.wait(lambda s: s.get("phase") == "Degraded", 40, "the candidate rolled back")
    assert status["stableRevision"] == stable and status["failedRevision"] == candidate, status
    assert "candidateRevision" not in status, status
    degraded = condition(status, "Degraded")
    assert degraded["status"] == "True" and degraded["reason"] == "ProgressDeadlineExceeded", degraded
    assert condition(status, "Ready")["status"] == "True", "the stable keeps serving"
    record = next(r for r in status["revisions"] if r["revision"] == candidate)
    assert record.get("outcome") == "RolledBack", record
    [event] = wait_until(
        lambda: [e for e in run.events() if e["reason"] == "RolledBack"],
        timeout=10,
        message="RolledBack event",
    )
    assert event["type"] == "Warning"
    for words in why:
        for where in (degraded["message"], status["message"], record.get("message", ""), event["message"]):
            assert words in where, (words, where)
    assert not [e for e in run.events() if e["reason"] in ("Promoted", "StepStarted")]
    return status
