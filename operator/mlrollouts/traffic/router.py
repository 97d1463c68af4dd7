"""``Router`` provider: the mlserving router in front of the revisions reads a route table ConfigMap.

Exact weights, shadow, stickiness. Variants are named after revisions. Weights are confirmed when the
stored route table carries them and the router Deployment has ready replicas (the router applies a
new table within a second of the ConfigMap change).
"""

from __future__ import annotations

from collections.abc import Mapping

from mlrollouts.builders import (
    Object,
    revision_name,
    route_configmap,
    route_table_name,
    router_name,
    router_objects,
)
from mlrollouts.traffic.base import (
    ObjectRef,
    Readback,
    TrafficContext,
    TrafficRouter,
    UnsupportedTraffic,
    deployment_ready,
    positive,
)
from mlserving.router.table import (
    ROUTES_CONFIGMAP_KEY,
    Route,
    RouteTable,
    RouteTableError,
    Shadow,
    Stickiness,
    Variant,
)


class RouterProvider(TrafficRouter):
    name = "Router"
    supports_shadow = True

    def route_table(
        self, ctx: TrafficContext, weights: Mapping[str, int], shadow: tuple[str, int] | None
    ) -> RouteTable:
        revisions = list(dict.fromkeys([*weights, *([shadow[0]] if shadow else [])]))
        if not positive(weights):
            raise UnsupportedTraffic(f"weights {dict(weights)} send no traffic anywhere")
        variants = [
            Variant(
                name=rev,
                upstreams=[ctx.upstream(revision_name(ctx.owner.name, rev))],
                weight=weights.get(rev, 0),
            )
            for rev in revisions
        ]
        config = ctx.config
        sticky = getattr(config, "stickiness", None)
        route = Route(
            name=ctx.owner.name,
            model=ctx.model,
            variants=variants,
            stickiness=Stickiness(header=sticky.header, cookie=sticky.cookie) if sticky is not None else None,
            shadow=Shadow(variant=shadow[0], percent=shadow[1]) if shadow else None,
        )
        return RouteTable(routes=[route])

    def reconcile(self, ctx: TrafficContext) -> list[Object]:
        config = ctx.config
        image = getattr(config, "image", None) or ctx.serving_image
        replicas = getattr(config, "replicas", None) or 1
        return router_objects(ctx.owner, image=image, replicas=replicas)

    def set_weights(
        self, ctx: TrafficContext, weights: Mapping[str, int], shadow: tuple[str, int] | None
    ) -> list[Object]:
        return [route_configmap(ctx.owner, self.route_table(ctx, weights, shadow))]

    def read_back(self, ctx: TrafficContext) -> list[ObjectRef]:
        ns = ctx.owner.namespace
        return [
            ObjectRef("v1", "ConfigMap", route_table_name(ctx.owner), ns),
            ObjectRef("apps/v1", "Deployment", router_name(ctx.owner), ns),
        ]

    def verify(
        self, ctx: TrafficContext, weights: Mapping[str, int], live: Mapping[ObjectRef, Object | None]
    ) -> Readback:
        cm_ref, dep_ref = self.read_back(ctx)
        cm = live.get(cm_ref)
        if cm is None:
            return Readback(None, message="route table ConfigMap not found")
        try:
            table = RouteTable.from_yaml((cm.get("data") or {}).get(ROUTES_CONFIGMAP_KEY, ""))
        except RouteTableError as exc:
            return Readback(None, message=str(exc))
        route = table.route_for_model(ctx.model)
        if route is None:
            return Readback(None, message=f"route table has no route for model {ctx.model}")
        total = sum(v.weight for v in route.variants)
        stored = {v.name: round(100 * v.weight / total) for v in route.variants}
        if not deployment_ready(live.get(dep_ref)):
            return Readback(None, effective=None, message="router has no ready replica")
        return Readback(stored)

    def finalize(self, ctx: TrafficContext) -> list[ObjectRef]:
        ns = ctx.owner.namespace
        name = router_name(ctx.owner)
        return [
            ObjectRef("v1", "ConfigMap", route_table_name(ctx.owner), ns),
            ObjectRef("apps/v1", "Deployment", name, ns),
            ObjectRef("v1", "Service", ctx.owner.name, ns),
            ObjectRef("rbac.authorization.k8s.io/v1", "RoleBinding", name, ns),
            ObjectRef("rbac.authorization.k8s.io/v1", "Role", name, ns),
            ObjectRef("v1", "ServiceAccount", name, ns),
        ]
