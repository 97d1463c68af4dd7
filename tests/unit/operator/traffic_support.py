"""Shared fixtures of the provider tests: a context and a store of live objects keyed like the controller's."""

from __future__ import annotations

from mlrollouts.builders import Owner
from mlrollouts.traffic import TrafficContext, ref_of

OWNER = Owner(name="iris", namespace="ml", uid="5d1e0a3c-aaaa-4bbb-8ccc-ddddeeeeffff")


def context(config=None, stable="aaa111", candidate="bbb222", replicas=4) -> TrafficContext:
    return TrafficContext(
        owner=OWNER, model="iris", stable=stable, candidate=candidate, config=config, replicas=replicas
    )


def live(*objects):
    return {ref_of(o): o for o in objects}
