"""The CompositeModel controller: observe -> decide -> apply of one composite pass.

- observe: the ModelDeployments and Experiments the Model nodes call (their status, read only: the
  operator never writes another resource's spec), the router Deployment and the route table
  ConfigMap as they are;
- decide: the graph the router runs (:mod:`mlrollouts.composite.graph`, refused naming the field
  when the data plane would refuse it) and the status (:func:`mlrollouts.composite.decide`);
- apply: the signing-key Secret (created once), the route table ConfigMap (the router reloads it:
  a graph change never restarts the router) and the router objects.

A component that is missing does not stop the graph from being applied: the router answers the
requests that reach it with 503 naming the node (or the node's ``onError`` policy applies), and the
composite is Degraded naming the node and its field until the component exists.
"""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar

from mlrollouts.api import COMPOSITE_MODEL
from mlrollouts.api.compositemodel import CompositeModel, CompositePhase
from mlrollouts.builders.common import Owner
from mlrollouts.builders.composite import composite_endpoint, composite_owner
from mlrollouts.builders.router import route_configmap, route_table_name, router_name, router_objects
from mlrollouts.composite import (
    Component,
    CompositeObservation,
    GraphSpecError,
    RouterState,
    composite_route_table,
    decide,
    endpoints,
    node_refs,
    read_component,
)
from mlrollouts.controller import metrics
from mlrollouts.controller.resource import KindController, Outcome, Pass, Refused
from mlserving.router.table import RouteTable

Obj = dict[str, Any]


async def observe_components(kube: Any, composite: CompositeModel) -> dict[str, Component]:
    """Each Model node's component, by node name; each component is read once."""
    namespace = composite.metadata.namespace or ""
    refs = node_refs(composite.spec)
    wanted = sorted({ref.component for ref in refs.values()})
    found = await asyncio.gather(
        *(kube.get(c.resource_kind.api_version, c.kind, namespace, c.name) for c in wanted)
    )
    components = {c: read_component(c, obj) for c, obj in zip(wanted, found, strict=True)}
    return {node: components[ref.component] for node, ref in refs.items()}


def router_state(deployment: Obj | None) -> RouterState:
    if deployment is None:
        return RouterState()
    status = deployment.get("status") or {}
    desired = int((deployment.get("spec") or {}).get("replicas") or 0)
    return RouterState(ready_replicas=int(status.get("readyReplicas") or 0), replicas=desired)


async def apply(composite: CompositeModel, owner: Owner, table: RouteTable, ctx: Pass) -> None:
    """The key first (router pods need it to start), then the table they read, then the router."""
    router = composite.spec.traffic.router
    await ctx.children.ensure_signing_key(owner)
    await ctx.children.apply(route_configmap(owner, table))
    objects = router_objects(owner, router.image or ctx.config.serving_image, router.replicas)
    await asyncio.gather(*(ctx.children.apply(obj) for obj in objects))


class CompositeModelController(KindController):
    kind = COMPOSITE_MODEL
    phases: ClassVar[tuple[str, ...]] = tuple(p.value for p in CompositePhase)

    async def reconcile(self, resource: Any, ctx: Pass) -> Outcome:
        composite: CompositeModel = resource
        refused = ctx.config.image_refusal({"spec.traffic.router.image": composite.spec.traffic.router.image})
        if refused is not None:
            raise Refused(refused, reason="ImageNotAllowed")
        meta = composite.metadata
        namespace = meta.namespace or ""
        owner = composite_owner(meta.name or "", namespace, meta.uid or "")
        components, router, live_table = await asyncio.gather(
            observe_components(ctx.kube, composite),
            ctx.kube.get("apps/v1", "Deployment", namespace, router_name(owner)),
            ctx.kube.get("v1", "ConfigMap", namespace, route_table_name(owner)),
        )
        nodes = endpoints(composite.spec, components, namespace, ctx.config.upstream_template)
        try:
            table = composite_route_table(owner.name, composite.spec, nodes)
        except GraphSpecError as exc:
            raise Refused(str(exc)) from None
        desired_data = route_configmap(owner, table)["data"]
        await apply(composite, owner, table, ctx)
        seen = CompositeObservation(
            components=components,
            endpoints={node: endpoint.infer_url for node, endpoint in nodes.items()},
            router=router_state(router),
            endpoint=composite_endpoint(owner, ctx.config.upstream_template),
            graph_changed=(live_table or {}).get("data") != desired_data,
        )
        decided = decide(composite, seen, ctx.now, poll=ctx.config.poll)
        return Outcome(
            status=decided.status.model_dump(mode="json", by_alias=True, exclude_none=True),
            events=decided.events,
            requeue_after=decided.requeue_after,
            decision=decided,
        )

    def progress_key(self, status: Obj) -> Any:
        return (status.get("phase"), status.get("observedGeneration"))

    def record(self, namespace: str, name: str, outcome: Outcome) -> None:
        if outcome.decision is not None:
            status = outcome.decision.status
            metrics.set_phase(metrics.COMPOSITE_PHASE, namespace, name, self.phases, status.phase.value)
            ready = {n.name: 1.0 if n.ready else 0.0 for n in status.nodes}
            metrics.set_values(metrics.COMPOSITE_NODE_READY, namespace, name, ready)
        for event in outcome.events:
            metrics.COMPOSITE_EVENTS.labels(namespace, name, event.reason).inc()

    def forget(self, namespace: str, name: str) -> None:
        metrics.forget(namespace, name, (metrics.COMPOSITE_PHASE, metrics.COMPOSITE_NODE_READY))
