"""``Service`` provider: one Service ``<name>`` over the pods of every revision.

Kubernetes spreads connections evenly over ready pods, so a weight is realised as a replica ratio:
with 4 replicas, 10 % becomes 1 candidate pod and 3 stable pods (25 %, reported as the effective
weight). A revision with weight 0 runs no pods; its readiness shows only once it gets traffic.
"""

from __future__ import annotations

from collections.abc import Mapping

from mlrollouts.builders import Object, all_revisions_service, revision_name
from mlrollouts.traffic.base import ObjectRef, Readback, TrafficContext, TrafficRouter, positive


def replica_split(weights: Mapping[str, int], total: int) -> dict[str, int]:
    """Integer replicas proportional to ``weights`` summing to ``total`` (at least 1 per live revision).

    Largest remainders decide the rounding; a revision with a positive weight always gets a pod, so the
    total grows when there are more live revisions than ``total``.
    """
    live = positive(weights)
    out = {rev: 0 for rev in weights}
    if not live:
        return out
    total = max(total, len(live))
    weight_sum = sum(live.values())
    exact = {rev: total * w / weight_sum for rev, w in live.items()}
    for rev, value in exact.items():
        out[rev] = max(1, int(value))
    remaining = total - sum(out[rev] for rev in live)
    by_remainder = sorted(live, key=lambda r: (exact[r] - int(exact[r]), live[r]), reverse=True)
    i = 0
    while remaining > 0:
        out[by_remainder[i % len(by_remainder)]] += 1
        remaining -= 1
        i += 1
    while remaining < 0:  # minimum-1 rule overshot: take from the largest
        largest = max(live, key=lambda r: out[r])
        out[largest] -= 1
        remaining += 1
    return out


class ServiceProvider(TrafficRouter):
    name = "Service"

    def reconcile(self, ctx: TrafficContext) -> list[Object]:
        return [all_revisions_service(ctx.owner)]

    def set_weights(
        self, ctx: TrafficContext, weights: Mapping[str, int], shadow: tuple[str, int] | None
    ) -> list[Object]:
        return []  # weights live in the replica counts (see replicas())

    def replicas(
        self, ctx: TrafficContext, weights: Mapping[str, int], planned: Mapping[str, int]
    ) -> dict[str, int]:
        split = replica_split(weights, ctx.replicas)
        out = dict(planned)
        for rev in weights:
            if rev in out:
                out[rev] = split.get(rev, 0)
        return out

    def gates_readiness(self) -> bool:
        return False

    def read_back(self, ctx: TrafficContext) -> list[ObjectRef]:
        revisions = [r for r in (ctx.stable, ctx.candidate) if r]
        return [
            ObjectRef("apps/v1", "Deployment", revision_name(ctx.owner.name, rev), ctx.owner.namespace)
            for rev in revisions
        ]

    def verify(
        self, ctx: TrafficContext, weights: Mapping[str, int], live: Mapping[ObjectRef, Object | None]
    ) -> Readback:
        plan = replica_split(weights, ctx.replicas)
        ready: dict[str, int] = {}
        for ref in self.read_back(ctx):
            obj = live.get(ref)
            rev = ref.name[len(ctx.owner.name) + 1 :]
            if obj is None:
                ready[rev] = 0
                continue
            ready[rev] = int((obj.get("status") or {}).get("readyReplicas") or 0)
        total = sum(ready.values())
        effective = {rev: round(100 * n / total) for rev, n in ready.items()} if total else {}
        as_planned = all(ready.get(rev, 0) == n for rev, n in plan.items() if rev in ready)
        if not as_planned or total == 0:
            return Readback(None, effective=effective or None, message="pods not yet at the planned ratio")
        return Readback(dict(weights), effective=effective)

    def finalize(self, ctx: TrafficContext) -> list[ObjectRef]:
        return [ObjectRef("v1", "Service", ctx.owner.name, ctx.owner.namespace)]
