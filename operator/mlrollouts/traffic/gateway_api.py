"""``GatewayAPI`` provider: an HTTPRoute ``<name>`` with one weighted backendRef per revision.

Weights are trusted only when every parent in ``status.parents`` that is ours reports ``Accepted``
for the route's current ``metadata.generation``: before that the gateway may still route by an old spec.
"""

from __future__ import annotations

from collections.abc import Mapping

from mlrollouts.builders import Object, ParentRef, http_route
from mlrollouts.traffic.base import ObjectRef, Readback, TrafficContext, TrafficRouter, UnsupportedTraffic


class GatewayApiProvider(TrafficRouter):
    name = "GatewayAPI"

    def _parents(self, ctx: TrafficContext) -> list[ParentRef]:
        refs = getattr(ctx.config, "parent_refs", None)
        if not refs:
            raise UnsupportedTraffic("spec.traffic.gatewayAPI.parentRefs: at least one parent is required")
        return [ParentRef(r.name, namespace=r.namespace, section_name=r.section_name) for r in refs]

    def reconcile(self, ctx: TrafficContext) -> list[Object]:
        return []

    def set_weights(
        self, ctx: TrafficContext, weights: Mapping[str, int], shadow: tuple[str, int] | None
    ) -> list[Object]:
        hostnames = list(getattr(ctx.config, "hostnames", None) or [])
        return [http_route(ctx.owner, self._parents(ctx), weights, hostnames=hostnames)]

    def _ref(self, ctx: TrafficContext) -> ObjectRef:
        return ObjectRef("gateway.networking.k8s.io/v1", "HTTPRoute", ctx.owner.name, ctx.owner.namespace)

    def read_back(self, ctx: TrafficContext) -> list[ObjectRef]:
        return [self._ref(ctx)]

    def verify(
        self, ctx: TrafficContext, weights: Mapping[str, int], live: Mapping[ObjectRef, Object | None]
    ) -> Readback:
        route = live.get(self._ref(ctx))
        if route is None:
            return Readback(None, message="HTTPRoute not found")
        generation = route.get("metadata", {}).get("generation")
        wanted = {(p.name, p.namespace or ctx.owner.namespace) for p in self._parents(ctx)}
        accepted: set[tuple[str, str]] = set()
        for parent in (route.get("status") or {}).get("parents") or []:
            ref = parent.get("parentRef") or {}
            key = (ref.get("name"), ref.get("namespace") or ctx.owner.namespace)
            for cond in parent.get("conditions") or []:
                if (
                    cond.get("type") == "Accepted"
                    and cond.get("status") == "True"
                    and generation is not None
                    and cond.get("observedGeneration") == generation
                ):
                    accepted.add(key)  # type: ignore[arg-type]
        missing = wanted - accepted
        if missing:
            names = ", ".join(sorted(f"{ns}/{n}" for n, ns in missing))
            return Readback(None, message=f"HTTPRoute generation {generation} not yet accepted by {names}")
        backends: dict[str, int] = {}
        prefix = f"{ctx.owner.name}-"
        for rule in route.get("spec", {}).get("rules") or []:
            for b in rule.get("backendRefs") or []:
                if b.get("name", "").startswith(prefix):
                    rev = b["name"][len(prefix) :]
                    backends[rev] = backends.get(rev, 0) + int(b.get("weight", 1))
        total = sum(backends.values())
        if total <= 0:
            return Readback(None, message="HTTPRoute has no backend with weight")
        return Readback({rev: round(100 * w / total) for rev, w in backends.items()})

    def finalize(self, ctx: TrafficContext) -> list[ObjectRef]:
        return [self._ref(ctx)]
