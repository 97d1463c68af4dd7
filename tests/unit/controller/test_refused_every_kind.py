"""A spec the operator refuses, of any kind: Degraded with the reason and the field, the generation it
judged, and one event per generation (not one per pass, nor one per operator restart)."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from test_compositemodel import composite
from test_passes import experiment, model_deployment

from mlrollouts.controller.compositemodel import CompositeModelController
from mlrollouts.controller.config import OperatorConfig
from mlrollouts.controller.experiment import ExperimentController
from mlrollouts.controller.modeldeployment import ModelDeploymentController
from mlrollouts.controller.resource import KindController, ResourceState, run_pass
from support.fake_kube import FakeKube

T0 = datetime(2026, 1, 5, 12, 0, 0, tzinfo=UTC)
CONFIG = OperatorConfig(prometheus_url=None, poll=1.0)


def refused_model_deployment() -> dict:
    body = model_deployment()
    body["spec"]["serving"]["replicas"] = -1
    return body


def refused_experiment() -> dict:
    body = experiment()
    body["spec"]["traffic"] = {"provider": "GatewayAPI", "gatewayAPI": {"parentRefs": [{"name": "gw"}]}}
    return body


def refused_composite() -> dict:
    body = composite()
    body["spec"]["nodes"][2]["onError"] = "Skip"  # a switch case may not be skipped
    return body


KINDS: list[tuple[Callable[[], KindController], Callable[[], dict], str]] = [
    (ModelDeploymentController, refused_model_deployment, "spec.serving.replicas"),
    (ExperimentController, refused_experiment, "spec.traffic.provider"),
    (CompositeModelController, refused_composite, "spec.nodes[2].onError"),
]


@pytest.mark.parametrize(("controller", "body", "field"), KINDS, ids=lambda k: getattr(k, "__name__", k))
def test_a_refused_spec_is_degraded_once_per_generation(controller, body, field):
    fake, ctl = FakeKube(), controller()
    obj = fake.put(body())
    kind, ns, name = obj["kind"], obj["metadata"]["namespace"], obj["metadata"]["name"]

    def run(state: ResourceState, at: datetime) -> list[str]:
        current = copy.deepcopy(fake.object(kind, ns, name))
        outcome = asyncio.run(run_pass(ctl, current, fake, CONFIG, state, now=at))
        assert outcome is not None
        return [e.reason for e in outcome.events]

    process = ResourceState()
    created = copy.deepcopy(obj)
    assert run(process, T0) == ["InvalidSpec"]
    # the create and resume handlers of one process can both get the body from before that write
    assert asyncio.run(run_pass(ctl, created, fake, CONFIG, process, now=T0)) is None
    status = fake.object(kind, ns, name)["status"]
    assert status["phase"] == "Degraded" and status["observedGeneration"] == 1
    assert field in status["message"]
    degraded = next(c for c in status["conditions"] if c["type"] == "Degraded")
    assert (
        degraded["status"] == "True" and degraded["reason"] == "InvalidSpec" and field in degraded["message"]
    )

    assert run(process, T0 + timedelta(seconds=5)) == []  # the next pass
    assert run(ResourceState(), T0 + timedelta(seconds=10)) == []  # a restarted operator

    fake.object(kind, ns, name)["metadata"]["generation"] = 2  # an edit that is still refused
    assert run(process, T0 + timedelta(seconds=15)) == ["InvalidSpec"]
    assert fake.object(kind, ns, name)["status"]["observedGeneration"] == 2
    assert run(process, T0 + timedelta(seconds=20)) == []
