"""The operator speaks in its own name: its events come from the operator (not from kopf) with the
reasons of its decisions, and kopf's bookkeeping is one short annotation, not a copy of the spec."""

from __future__ import annotations

import asyncio
import json

import kopf

from mlrollouts.controller.operator import KOPF_PREFIX, DigestDiffBaseStorage, post_events, settings
from mlrollouts.core.events import COMPONENT, REPORTING_CONTROLLER, Event
from support.fake_kube import FakeKube

NS = "ml"
BODY = {
    "apiVersion": "mlrollouts.io/v1alpha1",
    "kind": "ModelDeployment",
    "metadata": {"name": "iris", "namespace": NS, "uid": "uid-iris", "resourceVersion": "7", "generation": 1},
    "spec": {"model": {"uri": "file:///models/iris-v1.skops"}, "rollout": {"steps": [{"weight": 10}]}},
}


def test_events_are_posted_by_the_operator_about_the_resource():
    fake = FakeKube()
    events = [
        Event.normal("WeightChanged", "traffic set to a=90%, b=10%"),
        Event.warning("RolledBack", "x" * 2000),
    ]
    assert asyncio.run(post_events(fake, BODY, events, "operator-0")) == 2
    posted = [fake.object("Event", NS, name) for name in fake.names("Event")]
    assert {e["reason"] for e in posted} == {"WeightChanged", "RolledBack"}
    for event in posted:
        assert event["metadata"]["name"].startswith("iris.")
        assert (
            event["source"] == {"component": COMPONENT}
            and event["reportingComponent"] == REPORTING_CONTROLLER
        )
        assert event["reportingInstance"] == "operator-0"
        assert event["involvedObject"] == {
            "apiVersion": "mlrollouts.io/v1alpha1",
            "kind": "ModelDeployment",
            "name": "iris",
            "namespace": NS,
            "uid": "uid-iris",
            "resourceVersion": "7",
        }
        assert len(event["message"]) <= 1024
        assert "kopf" not in json.dumps(event)


def test_kopf_own_events_carry_the_operator_name_too():
    posting = settings(None).posting
    assert posting.reporting_component == COMPONENT
    assert "kopf" not in posting.event_name_prefix


def annotated(body: dict, patch: kopf.Patch) -> dict:
    annotations = {**body["metadata"].get("annotations", {}), **patch["metadata"]["annotations"]}
    annotations = {k: v for k, v in annotations.items() if v is not None}
    return {**body, "metadata": {**body["metadata"], "annotations": annotations}}


def test_the_last_handled_spec_is_a_short_digest_that_still_tells_a_change():
    storage = DigestDiffBaseStorage(prefix=KOPF_PREFIX)
    legacy_key = f"{KOPF_PREFIX}/last-handled-configuration"
    old = {**BODY, "metadata": {**BODY["metadata"], "annotations": {legacy_key: json.dumps(BODY["spec"])}}}
    assert storage.fetch(body=kopf.Body(BODY)) is None  # never handled: a creation

    patch = kopf.Patch()
    storage.store(body=kopf.Body(old), patch=patch, essence=storage.build(body=kopf.Body(old)))
    handled = annotated(old, patch)
    annotations = handled["metadata"]["annotations"]
    assert legacy_key not in annotations  # the full copy of earlier versions goes
    assert all(len(v) <= 32 for v in annotations.values()), annotations
    assert not any("file:///models" in v for v in annotations.values())

    body = kopf.Body(handled)
    assert storage.fetch(body=body) == storage.build(body=body)  # unchanged: nothing to do

    edited = json.loads(json.dumps(handled))
    edited["spec"]["rollout"]["steps"][0]["weight"] = 20
    edited_body = kopf.Body(edited)
    assert storage.fetch(body=edited_body) != storage.build(body=edited_body)  # an update
