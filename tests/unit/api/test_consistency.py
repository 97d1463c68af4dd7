"""The models and the CRD's own rules agree: for generated specs, pydantic accepts exactly what
the API server (schema + CEL) accepts."""

from __future__ import annotations

import pytest
from api_server_checks import server_side_errors
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from mlrollouts.api import parse_resource
from mlrollouts.core.durations import format_duration, parse_duration

SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def models_accept(doc: dict) -> bool:
    try:
        parse_resource(doc)
    except ValidationError:
        return False
    return True


step = st.one_of(
    st.builds(lambda w: {"weight": w}, st.integers(0, 100)),
    st.builds(lambda w, d: {"weight": w, "duration": d}, st.integers(0, 100), st.sampled_from(["30s", "1m"])),
    st.builds(lambda p: {"shadow": {"percent": p, "duration": "1m"}}, st.integers(1, 100)),
    st.just({"approval": {}}),
    st.just({"approval": {}, "duration": "1m"}),
    st.just({"weight": 10, "approval": {}}),
)


@SETTINGS
@given(
    steps=st.lists(step, max_size=6),
    strategy=st.sampled_from(["Canary", "BlueGreen", "Immediate"]),
)
def test_rollout_steps_agree(steps, strategy):
    doc = {
        "apiVersion": "mlrollouts.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "m"},
        "spec": {"model": {"uri": "file:///m.onnx"}, "rollout": {"strategy": strategy, "steps": steps}},
    }
    assert models_accept(doc) == (server_side_errors(doc) == [])


variant = st.fixed_dictionaries(
    {"modelDeployment": st.just("m")},
    optional={"weight": st.integers(0, 100), "floor": st.integers(0, 60)},
)


@SETTINGS
@given(
    variants=st.lists(variant, min_size=2, max_size=4),
    policy=st.sampled_from(["Fixed", "ThompsonSampling", "UCB1"]),
    policy_floor=st.integers(0, 40),
    provider=st.sampled_from(["Router", "IngressNginx"]),
)
def test_experiment_splits_agree(variants, policy, policy_floor, provider):
    doc = {
        "apiVersion": "mlrollouts.io/v1alpha1",
        "kind": "Experiment",
        "metadata": {"name": "e"},
        "spec": {
            "variants": [{"name": f"v{i}", **v} for i, v in enumerate(variants)],
            "policy": {"type": policy, "floor": policy_floor},
            "traffic": {"provider": provider},
        },
    }
    assert models_accept(doc) == (server_side_errors(doc) == [])


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    refs=st.lists(st.sampled_from(["a", "b", "c", "z"]), min_size=1, max_size=3),
    root=st.sampled_from(["top", "a", "z"]),
)
def test_graph_references_agree(refs, root):
    nodes = [{"name": "top", "type": "Ensemble", "children": refs}] + [
        {"name": n, "type": "Model", "modelDeployment": f"m-{n}"} for n in ("a", "b", "c")
    ]
    doc = {
        "apiVersion": "mlrollouts.io/v1alpha1",
        "kind": "CompositeModel",
        "metadata": {"name": "g"},
        "spec": {"root": root, "nodes": nodes},
    }
    assert models_accept(doc) == (server_side_errors(doc) == [])


@SETTINGS
@given(st.integers(0, 10**8))
def test_duration_round_trip(millis):
    text = format_duration(millis / 1000)
    assert parse_duration(text) == pytest.approx(millis / 1000, rel=1e-12, abs=1e-12)
    assert format_duration(parse_duration(text)) == text
