"""A ``promote`` annotation is acted on once, whatever write of the pass fails or is the last before
the operator dies: the status records the action it holds the effects of, and a pass that finds
that record only removes the annotation. The next request of the same value is a new one, also when
a write after the removal failed."""

from __future__ import annotations

import asyncio
import copy
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from mlrollouts.controller.children import ResourceWriter
from mlrollouts.controller.config import OperatorConfig
from mlrollouts.controller.kube import KubeError
from mlrollouts.controller.modeldeployment import ModelDeploymentController
from mlrollouts.controller.resource import (
    HANDLED_ACTION,
    Outcome,
    ResourceState,
    action_waiting,
    pending_action,
    run_pass,
)
from mlrollouts.core.names import ACTION_ANNOTATION, ACTIONS_HANDLED_ANNOTATION
from support.fake_kube import FakeKube

T0 = datetime(2026, 1, 5, 12, 0, 0, tzinfo=UTC)
CONFIG = OperatorConfig(prometheus_url=None, poll=1.0)
NS, NAME = "ml", "iris"


class FailOnce(FakeKube):
    """Fails the first write that ``matches(verb, kind, subresource, patch)``, once."""

    def __init__(self) -> None:
        super().__init__()
        self.matches: Any = None

    def _trip(self, *call: Any) -> None:
        if self.matches is not None and self.matches(*call):
            self.matches = None
            raise KubeError(500, "injected")

    async def apply(self, obj: dict[str, Any]) -> dict[str, Any]:
        self._trip("apply", obj["kind"], None, obj)
        return await super().apply(obj)

    async def merge_patch(self, api_version, kind, namespace, name, patch, subresource=None) -> Any:
        self._trip("patch", kind, subresource, patch)
        return await super().merge_patch(api_version, kind, namespace, name, patch, subresource)


def held_canary() -> dict[str, Any]:
    steps = [
        {"weight": 20, "duration": "1h"},
        {"weight": 50, "duration": "1h"},
        {"weight": 80, "duration": "1h"},
    ]
    return {
        "apiVersion": "mlrollouts.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": NAME, "namespace": NS, "uid": "uid-iris", "generation": 1},
        "spec": {
            "model": {"uri": "file:///models/v1.onnx"},
            "serving": {"replicas": 1},
            "rollout": {"strategy": "Canary", "steps": steps},
        },
    }


class Operator:
    """Passes over the one resource; a failed pass is followed by a new operator process."""

    def __init__(self, fake: FakeKube) -> None:
        self.fake, self.now, self.state = fake, T0, ResourceState()
        self.events: list[str] = []

    def body(self) -> dict[str, Any]:
        return self.fake.object("ModelDeployment", NS, NAME)

    def tick(self, seconds: float = 1.0) -> Outcome | None:
        self.fake.make_ready()
        self.now += timedelta(seconds=seconds)
        try:
            outcome = asyncio.run(
                run_pass(
                    ModelDeploymentController(),
                    copy.deepcopy(self.body()),
                    self.fake,
                    CONFIG,
                    self.state,
                    now=self.now,
                )
            )
        except KubeError:
            self.state = ResourceState()
            return None
        if outcome is not None:
            self.events += [e.reason for e in outcome.events]
        return outcome

    def until(self, predicate, ticks: int = 60) -> None:
        for _ in range(ticks):
            self.tick()
            if predicate(self.body().get("status") or {}):
                return
        raise AssertionError(f"never reached: {self.body().get('status')}")


def at_held_step(fake: FailOnce | None = None) -> tuple[FailOnce, Operator]:
    fake = fake or FailOnce()
    fake.put(held_canary())
    operator = Operator(fake)
    operator.until(lambda s: s.get("phase") == "Healthy")
    fake.object("ModelDeployment", NS, NAME)["spec"]["model"]["uri"] = "file:///models/v2.onnx"
    fake.object("ModelDeployment", NS, NAME)["metadata"]["generation"] = 2
    operator.until(lambda s: s.get("currentStep") == 0 and s.get("stepStartedAt"))
    return fake, operator


def clears_the_action(verb: str, kind: str, subresource: str | None, patch: Any) -> bool:
    return verb == "patch" and subresource is None and ACTION_ANNOTATION in str(patch)


def writes_the_route(verb: str, kind: str, subresource: str | None, patch: Any) -> bool:
    return verb == "apply" and kind == "ConfigMap"


def writes_the_status_after_the_removal(verb: str, kind: str, subresource: str | None, patch: Any) -> bool:
    """A status write that drops the record of the action after the annotation's removal (were the
    next request of the same value told from the last by that write alone, its failure would leave
    a record the next request is taken for)."""
    status = patch.get("status", {}) if subresource == "status" else {}
    return verb == "patch" and HANDLED_ACTION in status and status[HANDLED_ACTION] is None


@pytest.mark.parametrize("failing", [clears_the_action, writes_the_route], ids=lambda f: f.__name__)
def test_a_promote_is_acted_on_once_when_a_write_after_the_status_fails(failing):
    fake, operator = at_held_step()
    operator.events.clear()
    fake.object("ModelDeployment", NS, NAME)["metadata"]["annotations"] = {ACTION_ANNOTATION: "promote"}
    fake.matches = failing
    for _ in range(6):
        operator.tick()
    assert fake.matches is None  # the write did fail
    body = operator.body()
    assert ACTION_ANNOTATION not in (body["metadata"].get("annotations") or {})
    assert body["status"]["currentStep"] == 1, body["status"]
    # one event too, also when the pass failed after the status had recorded the promotion
    assert operator.events.count("PromotionRequested") == 1, operator.events
    assert body["metadata"]["annotations"][ACTIONS_HANDLED_ANNOTATION] == "1"
    assert body["status"].get(HANDLED_ACTION, {}).get("number", 1) == 1

    # and that next promote is acted on, once
    body["metadata"]["annotations"][ACTION_ANNOTATION] = "promote"
    for _ in range(3):
        operator.tick()
    assert operator.body()["status"]["currentStep"] == 2
    assert operator.events.count("PromotionRequested") == 2, operator.events
    assert operator.body()["metadata"]["annotations"][ACTIONS_HANDLED_ANNOTATION] == "2"


def test_a_promote_right_after_the_last_is_a_new_one_whatever_write_failed():
    fake, operator = at_held_step()

    def annotations() -> dict[str, str]:
        return fake.object("ModelDeployment", NS, NAME)["metadata"].setdefault("annotations", {})

    def promote() -> None:
        annotations()[ACTION_ANNOTATION] = "promote"
        for _ in range(6):
            operator.tick()
            if ACTION_ANNOTATION not in annotations():
                return
        raise AssertionError("the promote annotation was never removed")

    fake.matches = writes_the_status_after_the_removal
    promote()
    promote()  # at once: no pass in between may clean up after the first
    assert operator.body()["status"]["currentStep"] == 2, operator.body()["status"]
    assert operator.events.count("PromotionRequested") == 2, operator.events


def test_an_action_the_status_already_holds_is_hidden_from_the_kind():
    annotations = {ACTION_ANNOTATION: "promote", ACTIONS_HANDLED_ANNOTATION: "2", "other": "kept"}
    body = {"metadata": {"name": NAME, "annotations": annotations}}
    action, seen = pending_action(body, {HANDLED_ACTION: {"action": "promote", "number": 3}})
    assert action is None
    assert seen["metadata"]["annotations"] == {ACTIONS_HANDLED_ANNOTATION: "2", "other": "kept"}
    assert body["metadata"]["annotations"][ACTION_ANNOTATION] == "promote"  # the caller's body is intact
    assert pending_action(body, {HANDLED_ACTION: {"action": "abort", "number": 3}}) == ("promote", body)
    assert pending_action(body, {}) == ("promote", body)


def test_the_next_request_of_the_same_value_is_a_new_one():
    # the third promote was acted on and removed (count 3); the record of it stays in the status
    body = {"metadata": {"annotations": {ACTION_ANNOTATION: "promote", ACTIONS_HANDLED_ANNOTATION: "3"}}}
    assert pending_action(body, {HANDLED_ACTION: {"action": "promote", "number": 3}}) == ("promote", body)
    # a count written by hand that is not a number counts as none
    body["metadata"]["annotations"][ACTIONS_HANDLED_ANNOTATION] = "many"
    assert pending_action(body, {HANDLED_ACTION: {"action": "promote", "number": 1}})[0] is None


def test_an_action_waits_for_a_pass_until_its_annotation_is_removed():
    body: dict[str, Any] = {"metadata": {"annotations": {ACTION_ANNOTATION: "promote"}}, "status": {}}
    assert action_waiting(body)  # the driver runs a pass for it when no event did
    body["status"][HANDLED_ACTION] = {"action": "promote", "number": 1}
    assert action_waiting(body)  # acted on, but its removal is still to do
    assert not action_waiting(
        {"metadata": {}, "status": {HANDLED_ACTION: {"action": "promote", "number": 1}}}
    )


def test_the_removal_holds_the_version_the_pass_last_wrote():
    fake = FakeKube()
    fake.put(held_canary() | {"metadata": {**held_canary()["metadata"], "resourceVersion": "7"}})
    writer = ResourceWriter(fake, "mlrollouts.io/v1alpha1", "ModelDeployment", NS, NAME, "7")
    sent: list[Any] = []
    real = fake.merge_patch

    async def record(*args: Any, **kwargs: Any) -> Any:
        sent.append(args[4])
        result = await real(*args, **kwargs)
        return {**result, "metadata": {**result["metadata"], "resourceVersion": str(8 + len(sent))}}

    fake.merge_patch = record  # type: ignore[method-assign]
    asyncio.run(writer.status({}, {"phase": "Progressing"}))
    assert asyncio.run(writer.clear_action(4))
    assert sent[-1] == {
        "metadata": {
            "annotations": {ACTION_ANNOTATION: None, ACTIONS_HANDLED_ANNOTATION: "4"},
            "resourceVersion": "9",
        }
    }
