"""IngressNginx provider: stable + canary Ingress, two arms only."""

from __future__ import annotations

import pytest
from k8s_validation import validate_builtin
from traffic_support import context, live

from mlrollouts.api import IngressNginxConfig
from mlrollouts.traffic import UnsupportedTraffic, provider_for

P = provider_for("IngressNginx")
CONFIG = IngressNginxConfig(host="iris.example.com", ingress_class_name="nginx-public")


def test_two_valid_ingresses_with_the_canary_weight():
    stable, canary = P.set_weights(context(CONFIG), {"aaa111": 75, "bbb222": 25}, None)
    validate_builtin(stable)
    validate_builtin(canary)
    assert stable["metadata"]["name"] == "iris" and canary["metadata"]["name"] == "iris-canary"
    assert stable["spec"]["ingressClassName"] == "nginx-public"
    assert canary["metadata"]["annotations"]["nginx.ingress.kubernetes.io/canary-weight"] == "25"
    assert canary["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]["name"] == "iris-bbb222"


def test_read_back_confirms_the_split():
    ctx = context(CONFIG)
    objs = P.set_weights(ctx, {"aaa111": 75, "bbb222": 25}, None)
    assert P.verify(ctx, {}, live(*objs)).confirmed == {"aaa111": 75, "bbb222": 25}
    assert P.verify(ctx, {}, live(objs[0])).confirmed is None


def test_full_switch_and_single_revision():
    ctx = context(CONFIG)
    objs = P.set_weights(ctx, {"aaa111": 0, "bbb222": 100}, None)
    assert P.verify(ctx, {}, live(*objs)).confirmed == {"aaa111": 0, "bbb222": 100}
    only = context(CONFIG, stable="aaa111", candidate=None)
    objs = P.set_weights(only, {"aaa111": 100}, None)
    assert P.verify(only, {}, live(*objs)).confirmed == {"aaa111": 100}


def test_three_arms_are_refused():
    with pytest.raises(UnsupportedTraffic, match="two revisions"):
        P.set_weights(context(CONFIG), {"a": 50, "b": 30, "c": 20}, None)
