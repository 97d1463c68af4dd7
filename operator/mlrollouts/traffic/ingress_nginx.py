"""``IngressNginx`` provider: stable Ingress ``<name>`` and canary Ingress ``<name>-canary``.

ingress-nginx splits between exactly two arms: the stable Ingress's backend and the canary Ingress's
backend with ``canary-weight``. Shadow traffic is not supported (ingress-nginx mirrors all or nothing).
"""

from __future__ import annotations

from collections.abc import Mapping

from mlrollouts.builders import Object, canary_ingress, canary_ingress_name, stable_ingress
from mlrollouts.builders.ingress import CANARY_ANNOTATION, CANARY_WEIGHT_ANNOTATION
from mlrollouts.traffic.base import (
    ObjectRef,
    Readback,
    TrafficContext,
    TrafficRouter,
    UnsupportedTraffic,
    positive,
)


class IngressNginxProvider(TrafficRouter):
    name = "IngressNginx"
    max_arms = 2

    def _settings(self, ctx: TrafficContext) -> tuple[str | None, str, str]:
        cfg = ctx.config
        return (
            getattr(cfg, "host", None),
            getattr(cfg, "path", None) or "/",
            getattr(cfg, "ingress_class_name", None) or "nginx",
        )

    def arms(self, ctx: TrafficContext, weights: Mapping[str, int]) -> tuple[str, str, int]:
        """(stable revision, canary revision, canary weight) for the requested weights."""
        live = positive(weights)
        if len(live) > 2:
            raise UnsupportedTraffic(f"ingress-nginx splits between two revisions only, got {sorted(live)}")
        stable = ctx.stable if ctx.stable in weights else next(iter(weights), None)
        if stable is None:
            raise UnsupportedTraffic("no revision to route to")
        others = [rev for rev in weights if rev != stable]
        canary = ctx.candidate if ctx.candidate in others else (others[0] if others else stable)
        weight = int(weights.get(canary, 0)) if canary != stable else 0
        return stable, canary, weight

    def reconcile(self, ctx: TrafficContext) -> list[Object]:
        return []

    def set_weights(
        self, ctx: TrafficContext, weights: Mapping[str, int], shadow: tuple[str, int] | None
    ) -> list[Object]:
        host, path, cls = self._settings(ctx)
        stable, canary, weight = self.arms(ctx, weights)
        return [
            stable_ingress(ctx.owner, stable, host=host, path=path, class_name=cls),
            canary_ingress(ctx.owner, canary, weight, host=host, path=path, class_name=cls),
        ]

    def read_back(self, ctx: TrafficContext) -> list[ObjectRef]:
        ns = ctx.owner.namespace
        return [
            ObjectRef("networking.k8s.io/v1", "Ingress", ctx.owner.name, ns),
            ObjectRef("networking.k8s.io/v1", "Ingress", canary_ingress_name(ctx.owner), ns),
        ]

    @staticmethod
    def _backend_revision(ctx: TrafficContext, ingress: Object) -> str | None:
        try:
            service = ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]["name"]
        except (KeyError, IndexError, TypeError):
            return None
        prefix = f"{ctx.owner.name}-"
        return service[len(prefix) :] if service.startswith(prefix) else None

    def verify(
        self, ctx: TrafficContext, weights: Mapping[str, int], live: Mapping[ObjectRef, Object | None]
    ) -> Readback:
        stable_ref, canary_ref = self.read_back(ctx)
        stable_obj, canary_obj = live.get(stable_ref), live.get(canary_ref)
        if stable_obj is None or canary_obj is None:
            return Readback(None, message="stable or canary Ingress not found")
        stable = self._backend_revision(ctx, stable_obj)
        canary = self._backend_revision(ctx, canary_obj)
        annotations = canary_obj.get("metadata", {}).get("annotations") or {}
        if stable is None or canary is None or annotations.get(CANARY_ANNOTATION) != "true":
            return Readback(None, message="Ingress objects do not route to this resource's revisions")
        try:
            weight = int(annotations.get(CANARY_WEIGHT_ANNOTATION, "0"))
        except ValueError:
            return Readback(None, message="canary-weight annotation is not a number")
        confirmed = {stable: 100 - weight} if canary == stable else {stable: 100 - weight, canary: weight}
        return Readback(confirmed)

    def finalize(self, ctx: TrafficContext) -> list[ObjectRef]:
        return self.read_back(ctx)
