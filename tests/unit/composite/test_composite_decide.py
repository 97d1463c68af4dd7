"""One composite pass decided, tick by tick with a fixed clock: phase, conditions, node readiness,
events on changes only, and when to look again."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from mlrollouts.api import CompositeModel, parse_resource
from mlrollouts.composite import CompositeObservation, RouterState, decide, read_component
from mlrollouts.composite.components import ComponentRef
from mlrollouts.composite.decide import READY_RECHECK_SECONDS
from mlrollouts.core.conditions import ConditionStatus

T0 = datetime(2026, 2, 1, 9, 0, 0, tzinfo=UTC)
POLL = 1.0
ENDPOINT = "http://credit.risk.svc:80/v2/models/credit/infer"


def composite(status: dict | None = None, generation: int = 3) -> CompositeModel:
    body = {
        "apiVersion": "mlrollouts.io/v1alpha1",
        "kind": "CompositeModel",
        "metadata": {"name": "credit", "namespace": "risk", "generation": generation},
        "spec": {
            "root": "seq",
            "nodes": [
                {"name": "seq", "type": "Sequence", "children": ["scale", "score"]},
                {"name": "scale", "type": "Model", "modelDeployment": "scaler"},
                {"name": "score", "type": "Model", "experiment": "score-ab"},
            ],
        },
    }
    if status is not None:
        body["status"] = status
    resource = parse_resource(body)
    assert isinstance(resource, CompositeModel)
    return resource


def seen(
    scaler: dict | None, score: dict | None, router: int = 1, changed: bool = False
) -> CompositeObservation:
    return CompositeObservation(
        components={
            "scale": read_component(ComponentRef("ModelDeployment", "scaler"), scaler),
            "score": read_component(ComponentRef("Experiment", "score-ab"), score),
        },
        endpoints={
            "scale": "http://scaler/v2/models/scaler/infer",
            "score": "http://score-ab/v2/models/score-ab/infer",
        },
        router=RouterState(ready_replicas=router, replicas=1),
        endpoint=ENDPOINT,
        graph_changed=changed,
    )


HEALTHY = {
    "status": {
        "phase": "Healthy",
        "stableRevision": "a1",
        "conditions": [{"type": "Ready", "status": "True"}],
    }
}
RUNNING = {"status": {"phase": "Running", "variants": [{"name": "x", "weight": 100}]}}
NEW = {"status": {"phase": "Pending"}}


def after(decision, generation: int = 3) -> CompositeModel:
    return composite(decision.status.model_dump(mode="json", by_alias=True, exclude_none=True), generation)


def conditions(decision) -> dict[str, tuple[ConditionStatus, str]]:
    return {c.type: (c.status, c.reason) for c in decision.status.conditions}


def test_pending_while_a_component_has_no_stable_revision_then_ready():
    first = decide(composite(), seen(NEW, RUNNING, changed=True), T0, POLL)
    assert first.status.phase.value == "Pending" and first.requeue_after == POLL
    assert first.status.message == "waiting for nodes scale"
    assert conditions(first) == {
        "Ready": (ConditionStatus.FALSE, "ComponentsNotReady"),
        "Degraded": (ConditionStatus.FALSE, "AsExpected"),
    }
    by_name = {n.name: n for n in first.status.nodes}
    assert not by_name["seq"].ready and by_name["seq"].message == "waiting for scale"
    assert by_name["score"].ready and by_name["score"].component == "Experiment/score-ab"
    assert [e.reason for e in first.events] == ["GraphApplied", "NodeReady"]
    assert first.status.observed_generation == 3 and first.status.endpoint == ENDPOINT

    ready = decide(after(first), seen(HEALTHY, RUNNING), T0 + timedelta(seconds=1), POLL)
    assert ready.status.phase.value == "Ready" and ready.requeue_after == READY_RECHECK_SECONDS
    assert [e.reason for e in ready.events] == ["NodeReady", "GraphReady"]
    assert conditions(ready)["Ready"] == (ConditionStatus.TRUE, "GraphReady")

    steady = decide(after(ready), seen(HEALTHY, RUNNING), T0 + timedelta(seconds=11), POLL)
    assert steady.events == [] and steady.status == ready.status  # nothing changed, nothing to write


def test_ready_condition_keeps_its_transition_time_while_its_status_holds():
    ready = decide(composite(), seen(HEALTHY, RUNNING), T0, POLL)
    later = decide(after(ready), seen(HEALTHY, RUNNING), T0 + timedelta(minutes=5), POLL)
    [before] = [c for c in ready.status.conditions if c.type == "Ready"]
    [now] = [c for c in later.status.conditions if c.type == "Ready"]
    assert now.last_transition_time == before.last_transition_time == T0


def test_router_not_ready_keeps_the_composite_pending():
    decision = decide(composite(), seen(HEALTHY, RUNNING, router=0), T0, POLL)
    assert decision.status.phase.value == "Pending"
    assert conditions(decision)["Ready"] == (ConditionStatus.FALSE, "RouterNotReady")
    assert "0/1 replicas" in (decision.status.message or "")


def test_a_missing_component_degrades_naming_node_and_field_once():
    degraded = decide(composite(), seen(HEALTHY, None), T0, POLL)
    assert degraded.status.phase.value == "Degraded"
    assert degraded.status.message == (
        "node 'score' (spec.nodes[2].experiment): Experiment 'score-ab' not found"
    )
    assert conditions(degraded)["Degraded"] == (ConditionStatus.TRUE, "ComponentMissing")
    assert "ComponentMissing" in [e.reason for e in degraded.events]
    still = decide(after(degraded), seen(HEALTHY, None), T0 + timedelta(seconds=1), POLL)
    assert still.events == []
    back = decide(after(still), seen(HEALTHY, RUNNING), T0 + timedelta(seconds=2), POLL)
    assert back.status.phase.value == "Ready" and conditions(back)["Degraded"][0] is ConditionStatus.FALSE


def test_a_node_that_stops_being_ready_is_reported_once():
    ready = decide(composite(), seen(HEALTHY, RUNNING), T0, POLL)
    lost = {"status": {"phase": "Degraded", "message": "ProgressDeadlineExceeded"}}
    down = decide(after(ready), seen(lost, RUNNING), T0 + timedelta(seconds=10), POLL)
    assert [e.reason for e in down.events] == ["NodeNotReady"]
    assert down.events[0].type == "Warning" and "ProgressDeadlineExceeded" in down.events[0].message
    assert down.status.phase.value == "Pending"


def test_a_rollback_is_an_event_once_per_failed_revision():
    ready = decide(composite(), seen(HEALTHY, RUNNING), T0, POLL)
    rolled = {"status": {"phase": "Degraded", "stableRevision": "a1", "failedRevision": "b2"}}
    first = decide(after(ready), seen(rolled, RUNNING), T0 + timedelta(seconds=10), POLL)
    assert [e.reason for e in first.events] == ["ComponentRolledBack"]
    assert first.status.phase.value == "Ready"
    again = decide(after(first), seen(rolled, RUNNING), T0 + timedelta(seconds=20), POLL)
    assert again.events == []
    other = {"status": {"phase": "Degraded", "stableRevision": "a1", "failedRevision": "c3"}}
    third = decide(after(again), seen(other, RUNNING), T0 + timedelta(seconds=30), POLL)
    assert [e.reason for e in third.events] == ["ComponentRolledBack"]


def test_a_new_generation_is_observed():
    ready = decide(composite(), seen(HEALTHY, RUNNING), T0, POLL)
    newer = decide(after(ready, generation=4), seen(HEALTHY, RUNNING, changed=True), T0, POLL)
    assert newer.status.observed_generation == 4
    assert [e.reason for e in newer.events] == ["GraphApplied"]
