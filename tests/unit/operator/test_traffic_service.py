"""Service provider: one Service over all revisions, weights realised as replica ratio."""

from __future__ import annotations

from k8s_validation import validate_builtin
from traffic_support import OWNER, context, live

from mlrollouts.builders import ServingRevision, serving_deployment
from mlrollouts.traffic import provider_for
from mlrollouts.traffic.service import replica_split

P = provider_for("Service")


def deployment(rev, replicas, ready):
    dep = serving_deployment(ServingRevision(OWNER, rev, "iris", "file:///m"), replicas=replicas)
    dep["status"] = {"readyReplicas": ready}
    return dep


def test_replica_split_is_proportional_and_keeps_a_pod_per_live_revision():
    assert replica_split({"a": 90, "b": 10}, 4) == {"a": 3, "b": 1}
    assert replica_split({"a": 50, "b": 50}, 4) == {"a": 2, "b": 2}
    assert replica_split({"a": 100, "b": 0}, 4) == {"a": 4, "b": 0}
    assert replica_split({"a": 99, "b": 1}, 1) == {"a": 1, "b": 1}
    assert replica_split({"a": 0, "b": 100}, 3) == {"a": 0, "b": 3}


def test_single_entry_service_spans_revisions():
    [svc] = P.reconcile(context())
    validate_builtin(svc)
    assert "mlrollouts.io/revision" not in svc["spec"]["selector"]
    assert P.set_weights(context(), {"aaa111": 50}, None) == []
    assert not P.gates_readiness()


def test_replicas_follow_weights():
    out = P.replicas(context(replicas=4), {"aaa111": 75, "bbb222": 25}, {"aaa111": 4, "bbb222": 4, "old": 0})
    assert out == {"aaa111": 3, "bbb222": 1, "old": 0}


def test_effective_weight_is_reported_and_confirmation_waits_for_ready_pods():
    ctx = context(replicas=4)
    weights = {"aaa111": 90, "bbb222": 10}
    rb = P.verify(ctx, weights, live(deployment("aaa111", 3, 3), deployment("bbb222", 1, 0)))
    assert rb.confirmed is None and rb.effective == {"aaa111": 100, "bbb222": 0}
    rb = P.verify(ctx, weights, live(deployment("aaa111", 3, 3), deployment("bbb222", 1, 1)))
    assert rb.confirmed == weights and rb.effective == {"aaa111": 75, "bbb222": 25}
