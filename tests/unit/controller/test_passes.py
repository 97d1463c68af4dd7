"""The apply side of every kind, pass by pass, against an in-memory Kubernetes client and a fixed
clock: what each pass writes, what it refuses, and what it never sends twice."""

from __future__ import annotations

import asyncio
import copy
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import yaml

from mlrollouts.controller.children import Children, merge_patch_for
from mlrollouts.controller.config import OperatorConfig
from mlrollouts.controller.experiment import ExperimentController
from mlrollouts.controller.kube import KubeError
from mlrollouts.controller.modeldeployment import ModelDeploymentController
from mlrollouts.controller.resource import ResourceState, run_pass
from mlserving.router.table import ROUTES_CONFIGMAP_KEY, RouteTable
from support.fake_kube import FakeKube

T0 = datetime(2026, 1, 5, 12, 0, 0, tzinfo=UTC)
CONFIG = OperatorConfig(prometheus_url=None, poll=1.0)
NS = "ml"


def model_deployment(name: str = "iris", uri: str = "file:///models/iris-v1.skops", **extra: Any) -> dict:
    body = {
        "apiVersion": "mlrollouts.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": name, "namespace": NS, "uid": f"uid-{name}", "generation": 1},
        "spec": {
            "model": {"uri": uri},
            "serving": {"replicas": 1},
            "rollout": {"strategy": "Canary", "steps": [{"weight": 50, "duration": "10s"}]},
            **extra,
        },
    }
    return body


def run(controller, fake: FakeKube, state: ResourceState, kind: str, name: str, now: datetime):
    body = fake.object(kind, NS, name)
    assert body is not None
    return asyncio.run(run_pass(controller, copy.deepcopy(body), fake, CONFIG, state, now=now))


def make_ready(fake: FakeKube, name: str) -> None:
    assert fake.object("Deployment", NS, name) is not None, f"Deployment {name} was never applied"
    fake.make_ready(name)


def routes(fake: FakeKube, configmap: str) -> RouteTable:
    cm = fake.object("ConfigMap", NS, configmap)
    assert cm is not None, f"ConfigMap {configmap} was never applied"
    return RouteTable.from_yaml(cm["data"][ROUTES_CONFIGMAP_KEY])


def serving_deployments(fake: FakeKube, owner: str) -> list[str]:
    return [n for n in fake.names("Deployment") if n.startswith(f"{owner}-") and n != f"{owner}-router"]


def test_first_revision_is_applied_waits_for_readiness_and_becomes_healthy():
    fake, state, md = FakeKube(), ResourceState(), ModelDeploymentController()
    fake.put(model_deployment())
    first = run(md, fake, state, "ModelDeployment", "iris", T0)
    assert first is not None and first.applied > 0
    [revision_deployment] = serving_deployments(fake, "iris")
    assert fake.object("Service", NS, revision_deployment) is not None
    status = fake.object("ModelDeployment", NS, "iris")["status"]
    assert status["phase"] != "Healthy"  # nothing is ready yet

    make_ready(fake, revision_deployment)
    make_ready(fake, "iris-router")
    for tick in range(1, 6):
        run(md, fake, state, "ModelDeployment", "iris", T0 + timedelta(seconds=tick))
    status = fake.object("ModelDeployment", NS, "iris")["status"]
    assert status["phase"] == "Healthy", status
    revision = revision_deployment.removeprefix("iris-")
    assert status["stableRevision"] == revision
    table = routes(fake, "iris-routes")
    assert {v.name: v.weight for r in table.routes for v in r.variants} == {revision: 100}
    assert fake.object("Secret", NS, "iris-router-key") is not None


def test_an_unchanged_pass_applies_no_child():
    fake, state, md = FakeKube(), ResourceState(), ModelDeploymentController()
    fake.put(model_deployment())
    run(md, fake, state, "ModelDeployment", "iris", T0)
    [dep] = serving_deployments(fake, "iris")
    make_ready(fake, dep)
    make_ready(fake, "iris-router")
    for tick in range(1, 6):
        run(md, fake, state, "ModelDeployment", "iris", T0 + timedelta(seconds=tick))
    writes = len(fake.writes)
    again = run(md, fake, state, "ModelDeployment", "iris", T0 + timedelta(seconds=6))
    assert again is not None and again.applied == 0
    # only the resource's own status may be written (the time the weights were last confirmed)
    assert {verb for verb, _, _ in fake.writes[writes:]} <= {"patch/status"}


def test_a_refused_spec_is_degraded_with_the_field_and_one_event_per_change():
    fake, state, md = FakeKube(), ResourceState(), ModelDeploymentController()
    body = model_deployment()
    body["spec"]["serving"]["replicas"] = -1
    fake.put(body)
    outcome = run(md, fake, state, "ModelDeployment", "iris", T0)
    status = fake.object("ModelDeployment", NS, "iris")["status"]
    assert status["phase"] == "Degraded" and status["observedGeneration"] == 1
    assert "spec.serving.replicas" in status["message"]
    [event] = outcome.events
    assert event.reason == "InvalidSpec" and "spec.serving.replicas" in event.message
    assert serving_deployments(fake, "iris") == []  # no child is touched
    again = run(md, fake, state, "ModelDeployment", "iris", T0 + timedelta(seconds=5))
    assert list(again.events) == []


def test_a_disallowed_image_is_refused_with_its_reason():
    fake, state, md = FakeKube(), ResourceState(), ModelDeploymentController()
    fake.put(model_deployment(serving={"replicas": 1, "image": "evil/image:1"}))
    config = OperatorConfig(allowed_images=("mlrollouts/*",))
    body = fake.object("ModelDeployment", NS, "iris")
    outcome = asyncio.run(run_pass(md, copy.deepcopy(body), fake, config, state, now=T0))
    [event] = outcome.events
    assert event.reason == "ImageNotAllowed" and "spec.serving.image" in event.message
    condition = {c["type"]: c for c in fake.object("ModelDeployment", NS, "iris")["status"]["conditions"]}
    assert condition["Degraded"]["status"] == "True" and condition["Degraded"]["reason"] == "ImageNotAllowed"


def test_an_api_error_forgets_what_was_applied():
    fake, state, md = FakeKube(), ResourceState(), ModelDeploymentController()
    fake.put(model_deployment())
    run(md, fake, state, "ModelDeployment", "iris", T0)
    assert state.applied  # children remembered
    fake.fail_next = KubeError(500, "etcd is down")
    with pytest.raises(KubeError):
        run(md, fake, state, "ModelDeployment", "iris", T0 + timedelta(seconds=1))
    assert state.applied == {}
    again = run(md, fake, state, "ModelDeployment", "iris", T0 + timedelta(seconds=2))
    assert again.applied > 0  # everything is sent again once


def test_a_body_older_than_the_last_status_write_is_not_acted_on():
    fake, state, md = FakeKube(), ResourceState(), ModelDeploymentController()
    fake.put(model_deployment())
    stale = copy.deepcopy(fake.object("ModelDeployment", NS, "iris"))
    run(md, fake, state, "ModelDeployment", "iris", T0)
    assert fake.object("ModelDeployment", NS, "iris")["status"]  # the pass wrote a status
    skipped = asyncio.run(run_pass(md, stale, fake, CONFIG, state, now=T0 + timedelta(seconds=1)))
    assert skipped is None


def test_an_unknown_action_is_reported_and_removed():
    fake, state, md = FakeKube(), ResourceState(), ModelDeploymentController()
    body = model_deployment()
    body["metadata"]["annotations"] = {"mlrollouts.io/action": "launch"}
    fake.put(body)
    outcome = run(md, fake, state, "ModelDeployment", "iris", T0)
    assert "UnknownAction" in [e.reason for e in outcome.events]
    annotations = fake.object("ModelDeployment", NS, "iris")["metadata"].get("annotations") or {}
    assert "mlrollouts.io/action" not in annotations


def experiment(name: str = "ab") -> dict:
    return {
        "apiVersion": "mlrollouts.io/v1alpha1",
        "kind": "Experiment",
        "metadata": {"name": name, "namespace": NS, "uid": f"uid-{name}", "generation": 1},
        "spec": {
            "variants": [
                {"name": "a", "modelDeployment": "md-a", "weight": 70},
                {"name": "b", "modelDeployment": "md-b", "weight": 30},
            ],
            "policy": {"type": "Fixed"},
            "interval": "30s",
        },
    }


def serving_md(name: str, revision: str) -> dict:
    body = model_deployment(name)
    body["status"] = {"phase": "Healthy", "stableRevision": revision}
    return body


def test_experiment_waits_for_its_model_deployments_then_routes_the_planned_weights():
    fake, state, ctl = FakeKube(), ResourceState(), ExperimentController()
    fake.put(experiment())
    fake.put(serving_md("md-a", "r1"))
    waiting = run(ctl, fake, state, "Experiment", "ab", T0)
    assert waiting is not None
    assert fake.object("ConfigMap", NS, "ab-routes") is None  # md-b is missing: no route yet
    status = fake.object("Experiment", NS, "ab")["status"]
    assert "md-b" in yaml.safe_dump(status)

    fake.put(serving_md("md-b", "r2"))
    started = run(ctl, fake, state, "Experiment", "ab", T0 + timedelta(seconds=2))
    table = routes(fake, "ab-routes")
    assert {v.name: v.weight for r in table.routes for v in r.variants} == {"a": 70, "b": 30}
    assert fake.object("Secret", NS, "ab-router-key") is not None
    assert fake.object("Deployment", NS, "ab-router") is not None
    assert started.requeue_after is not None


def test_experiment_with_an_unsupported_provider_is_refused():
    fake, state, ctl = FakeKube(), ResourceState(), ExperimentController()
    body = experiment()
    body["spec"]["traffic"] = {"provider": "GatewayAPI", "gatewayAPI": {"parentRefs": [{"name": "gw"}]}}
    fake.put(body)
    outcome = run(ctl, fake, state, "Experiment", "ab", T0)
    status = fake.object("Experiment", NS, "ab")["status"]
    assert status["phase"] == "Degraded" and "spec.traffic.provider" in status["message"]
    assert [e.reason for e in outcome.events] == ["InvalidSpec"]
    assert fake.names("ConfigMap") == []


def test_children_apply_each_content_once_and_scaling_resets_that_memory():
    fake = FakeKube()
    children = Children(fake, NS)
    obj = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "d", "namespace": NS},
        "spec": {"replicas": 1},
    }
    assert asyncio.run(children.apply(obj)) == 1
    assert asyncio.run(children.apply(obj)) == 0
    asyncio.run(children.scale("d", 0))
    assert asyncio.run(children.apply(obj)) == 1
    assert children.applied == 3


def test_merge_patch_removes_vanished_keys_and_keeps_equal_ones():
    old = {"phase": "Progressing", "candidateRevision": "b", "analysis": {"runs": [1], "lastRunAt": "t"}}
    new = {"phase": "Healthy", "analysis": {"runs": [1, 2]}}
    assert merge_patch_for(old, new) == {
        "phase": "Healthy",
        "candidateRevision": None,
        "analysis": {"runs": [1, 2], "lastRunAt": None},
    }
    assert merge_patch_for(new, new) == {}
