"""The shipped examples, applied on the playground as their READMEs say, reach the end state the
READMEs describe.

Covered elsewhere, not run twice: `examples/canary/playground.yaml` at the demo's 25 requests a second
(promoted, then a broken version rolled back) and `examples/canary/modeldeployment.yaml` applied with
kubectl (tests/e2e/test_playground_canary.py); `examples/composite/` (tests/e2e/
test_playground_composite.py); `examples/online-learning/` (tests/e2e/test_playground_learning.py).
Here: the canary with the README's hand-sent traffic (about 15 requests a second) is promoted without
holding, and `examples/ab-bandit/experiment.yaml` waits for its variants, then serves them behind its
own entry point with sticky assignment and feedback, and stops on the abort annotation.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import httpx
import pytest
import yaml

from mlrollouts.controller.kube import SyncKube
from mlrollouts.core.names import API_VERSION
from mlrollouts.local.demo_canary import train_demo_models
from mlrollouts.local.demo_scenario import TrafficGenerator, entry_point
from mlrollouts.local.playground import Playground
from mlrollouts.rollout.machine import INCONCLUSIVE_HOLD
from support import require_binary, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
README_RATE = 15.0  # the README's curl loop: `while sleep 0.05; do curl ...; done`
ROW = [5.1, 3.5, 1.4, 0.2]


@pytest.fixture(scope="module")
def playground(tmp_path_factory):
    require_binary("prometheus")
    root = tmp_path_factory.mktemp("examples")
    with Playground(root / "state") as playground:
        playground.models = train_demo_models(root / "models")
        yield playground


def canary_manifest(uri: Path, version: str, name: str = "iris", model: str = "iris") -> dict:
    manifest = yaml.safe_load((EXAMPLES / "canary" / "playground.yaml").read_text())
    manifest["metadata"]["name"] = name
    manifest["spec"]["model"].update(name=model, uri=uri.resolve().as_uri(), version=version)
    return manifest


def phase(kube, kind: str, name: str) -> dict:
    return (kube.get(API_VERSION, kind, "default", name) or {}).get("status") or {}


def test_canary_promotes_with_the_readme_traffic(playground):
    """minSamples of the example fits the README's hand-sent traffic: no hold at 10 %."""
    with SyncKube.from_environment(str(playground.kubeconfig)) as kube:
        kube.create(canary_manifest(playground.models.v1, "1"))
        v1 = wait_until(
            lambda: (
                (s := phase(kube, "ModelDeployment", "iris")).get("phase") == "Healthy"
                and s["stableRevision"]
            ),
            timeout=120,
            message="v1 Healthy",
        )
        body = {"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": ROW}]}
        traffic = TrafficGenerator(
            kube,
            "default",
            "iris",
            "/v2/models/iris/infer",
            [body],
            lambda r: r.status_code,
            rate=README_RATE,
        )
        traffic.start()
        try:
            v2_uri = playground.models.v2.resolve().as_uri()
            patch = {"spec": {"model": {"uri": v2_uri, "version": "2"}}}
            kube.merge_patch(API_VERSION, "ModelDeployment", "default", "iris", patch)
            wait_until(
                lambda: (
                    (s := phase(kube, "ModelDeployment", "iris")).get("phase") == "Healthy"
                    and s.get("stableRevision") not in (None, v1)
                ),
                timeout=240,
                message="v2 promoted",
            )
        finally:
            traffic.stop()
        events = [e for e in kube.list("v1", "Event", "default") if e["involvedObject"]["name"] == "iris"]
        reasons = Counter(e.get("reason") for e in events)
        steps = len(canary_manifest(playground.models.v2, "2")["spec"]["rollout"]["steps"])
        assert reasons["StepCompleted"] == steps and reasons[INCONCLUSIVE_HOLD] == 0, reasons
        assert set(traffic.counts) == {200}, traffic.counts


def test_ab_bandit_experiment_serves_its_variants_and_stops_on_abort(playground):
    experiment = yaml.safe_load((EXAMPLES / "ab-bandit" / "experiment.yaml").read_text())
    deployments = [v["modelDeployment"] for v in experiment["spec"]["variants"]]
    with SyncKube.from_environment(str(playground.kubeconfig)) as kube:
        kube.create(experiment)
        # "The experiment stays Pending until all three serve, and its message names the ones it is
        # waiting for."
        pending = wait_until(
            lambda: (s := phase(kube, "Experiment", "recommender")).get("phase") == "Pending" and s
        )
        assert all(name in pending.get("message", "") for name in deployments), pending
        models = [playground.models.v1, playground.models.v2, playground.models.v1]
        for name, model in zip(deployments, models, strict=True):
            kube.create(canary_manifest(model, "1", name=name, model="recommender"))
        wait_until(
            lambda: phase(kube, "Experiment", "recommender").get("phase") == "Running",
            timeout=180,
            message="the experiment Running",
        )
        # the objects the README lists, owned by the Experiment
        for api, kind, name in [
            ("v1", "Service", "recommender"),
            ("apps/v1", "Deployment", "recommender-router"),
            ("v1", "ConfigMap", "recommender-routes"),
            ("v1", "Secret", "recommender-router-key"),
        ]:
            owners = (kube.get(api, kind, "default", name) or {}).get("metadata", {}).get("ownerReferences")
            assert owners and owners[0]["kind"] == "Experiment", (kind, name)
        url = wait_until(lambda: entry_point(kube, "default", "recommender"), timeout=60)
        body = {"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP64", "data": ROW}]}
        headers = {"x-user-id": "user-42"}

        def infer() -> httpx.Response:
            return httpx.post(f"{url}/v2/models/recommender/infer", json=body, headers=headers, timeout=10)

        # the routers resolve the variants' Services by polling: wait for the first answer
        wait_until(lambda: infer().status_code == 200, timeout=30, message="a first answer")
        answers = [infer() for _ in range(5)]
        assert {a.status_code for a in answers} == {200}
        variants = {a.headers["x-mlrollouts-variant"] for a in answers}
        assert len(variants) == 1 and variants <= {v["name"] for v in experiment["spec"]["variants"]}
        feedback = httpx.post(
            f"{url}/v2/models/recommender/feedback",
            json={"id": answers[0].headers["x-mlrollouts-id"], "reward": 1},
            timeout=10,
        )
        assert feedback.status_code < 300, feedback.text
        # "Stop early": the experiment becomes Stopped and the operator removes the annotation
        aborted = {"metadata": {"annotations": {"mlrollouts.io/action": "abort"}}}
        kube.merge_patch(API_VERSION, "Experiment", "default", "recommender", aborted)
        wait_until(lambda: phase(kube, "Experiment", "recommender").get("phase") == "Stopped", timeout=60)
        wait_until(
            lambda: (
                "mlrollouts.io/action"
                not in (
                    kube.get(API_VERSION, "Experiment", "default", "recommender")["metadata"].get(
                        "annotations"
                    )
                    or {}
                )
            ),
            timeout=30,
            message="the action annotation removed",
        )
