"""One reconcile pass of a ModelDeployment: observe -> decide (pure) -> apply.

Observe reads the revision Deployments, the traffic provider's objects and, when an analysis run is
due, Prometheus. Decide is :func:`mlrollouts.rollout.decide`. Apply server-side-applies the children
(with owner references), scales the others, writes the status with one merge patch, emits events and
removes a handled action annotation.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from mlrollouts.analysis import AnalysisContext, run_checks
from mlrollouts.api import ModelDeployment, format_validation_error
from mlrollouts.builders import (
    Object,
    Owner,
    ServingRevision,
    revision_name,
    router_name,
    serving_deployment,
    serving_service,
)
from mlrollouts.builders.common import COMPONENT_LABEL, OWNER_LABEL, REVISION_LABEL
from mlrollouts.controller import metrics
from mlrollouts.controller.config import OperatorConfig
from mlrollouts.controller.kube import (
    Kube,
    KubeError,
    apply_cached,
    clear_action,
    ensure_signing_key,
    merge_patch_for,
    refused_status,
)
from mlrollouts.rollout import (
    Action,
    AnalysisRun,
    CheckOutcome,
    Decision,
    Event,
    Observation,
    RevisionHealth,
    Verdict,
    analysis_due,
    decide,
)
from mlrollouts.rollout.resource import (
    ACTION_ANNOTATION,
    requested_action,
    rollout_spec,
    rollout_state,
    status_from_state,
    target_revision,
)
from mlrollouts.traffic import (
    ObjectRef,
    Readback,
    TrafficContext,
    UnsupportedTraffic,
    provider_for,
)

log = logging.getLogger("mlrollouts.controller")


@dataclass
class Outcome:
    """What a pass did: for the handler (events, requeue) and for tests and benchmarks."""

    decision: Decision | None
    events: list[Event] = field(default_factory=list)
    requeue_after: float | None = None
    applied: int = 0


def _positive(weights: dict[str, int] | None) -> dict[str, int]:
    return {k: v for k, v in (weights or {}).items() if v > 0}


def serving_revision(
    md: ModelDeployment, owner: Owner, revision: str, config: OperatorConfig
) -> ServingRevision:
    serving = md.spec.serving
    resources: dict[str, Any] = {}
    if serving.resources.requests:
        resources["requests"] = dict(serving.resources.requests)
    if serving.resources.limits:
        resources["limits"] = dict(serving.resources.limits)
    extra_args: list[str] = list(serving.args)
    if md.spec.model.allow_unsafe_pickle:
        extra_args.append("--allow-unsafe-pickle")
    return ServingRevision(
        owner=owner,
        revision=revision,
        model_name=md.served_model_name,
        model_uri=md.spec.model.uri,
        model_format=md.spec.model.format.value,
        image=serving.image or config.serving_image,
        replicas=serving.replicas,
        resources=resources or {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}},
        env={e.name: e.value for e in serving.env},
        extra_args=tuple(extra_args),
    )


def traffic_context(
    md: ModelDeployment, owner: Owner, stable: str | None, candidate: str | None, config: OperatorConfig
) -> TrafficContext:
    traffic = md.spec.traffic
    section = {
        "Router": traffic.router,
        "GatewayAPI": traffic.gateway_api,
        "IngressNginx": traffic.ingress_nginx,
        "Service": None,
    }.get(traffic.provider.value)
    return TrafficContext(
        owner=owner,
        model=md.served_model_name,
        stable=stable,
        candidate=candidate,
        config=section,
        serving_image=md.spec.serving.image or config.serving_image,
        replicas=md.spec.serving.replicas,
        upstream_template=config.upstream_template,
    )


def disallowed_image(md: ModelDeployment, provider: str, config: OperatorConfig) -> str | None:
    """Why the resource may not be rolled out under the operator's allowed images, or ``None``."""
    images = {"spec.serving.image": md.spec.serving.image}
    if provider == "Router":
        images["spec.traffic.router.image"] = md.spec.traffic.router.image
    for location, image in images.items():
        if image is not None and not config.image_allowed(image):
            allowed = ", ".join((config.serving_image, *config.allowed_images))
            return f"{location}: image {image!r} is not allowed by the operator (allowed: {allowed})"
    return None


async def _run_analysis(
    md: ModelDeployment, candidate: str, stable: str | None, now: datetime, config: OperatorConfig
) -> AnalysisRun:
    analysis = md.spec.rollout.analysis
    assert analysis is not None
    context = AnalysisContext.from_spec(
        analysis,
        namespace=md.metadata.namespace or "",
        name=md.metadata.name or "",
        model=md.served_model_name,
        revision=candidate,
        stable_revision=stable,
        default_prometheus_address=config.prometheus_url,
    )
    if analysis.prometheus is None:  # the operator's default Prometheus, with its timeout
        context = dataclasses.replace(context, prometheus_timeout=config.prometheus_timeout)
    results = await run_checks(analysis.checks, context)
    outcomes = []
    for r in results:
        metrics.ANALYSIS.labels(md.metadata.namespace, md.metadata.name, r.name, r.verdict.value).inc()
        outcomes.append(
            CheckOutcome(
                name=r.name,
                verdict=Verdict(r.verdict.value),
                value=r.value,
                stable_value=r.stable_value,
                samples=r.samples,
                message=r.message,
            )
        )
    return AnalysisRun(now, tuple(outcomes))


async def _read_back(kube: Kube, refs: list[ObjectRef]) -> dict[ObjectRef, Object | None]:
    objs = await asyncio.gather(*(kube.get(r.api_version, r.kind, r.namespace, r.name) for r in refs))
    return dict(zip(refs, objs, strict=True))


async def reconcile(
    body: dict[str, Any],
    kube: Kube,
    config: OperatorConfig,
    now: datetime | None = None,
    applied_cache: dict[str, str] | None = None,
    previous_provider: list[str] | None = None,
) -> Outcome:
    """One observe -> decide -> apply pass over the resource ``body`` (as kopf hands it over).

    ``applied_cache`` (per resource, kept by the caller) remembers what was last applied, so an
    unchanged child is not sent again; a fresh cache (after a restart) re-applies everything once.
    ``previous_provider`` (a one-element list kept by the caller) names the traffic provider of the
    last pass: when ``spec.traffic.provider`` changes, the old provider's objects are deleted.
    """
    now = now or datetime.now(UTC)
    cache = applied_cache if applied_cache is not None else {}

    meta = body.get("metadata") or {}
    namespace, name = meta.get("namespace", ""), meta.get("name", "")
    status_before = dict(body.get("status") or {})
    try:
        md = ModelDeployment.model_validate(dict(body))
    except ValidationError as exc:
        return await _invalid(kube, namespace, name, meta, status_before, format_validation_error(exc), now)
    try:
        provider = provider_for(md.spec.traffic.provider.value)
    except ValueError as exc:
        return await _invalid(kube, namespace, name, meta, status_before, str(exc), now)

    refused = disallowed_image(md, provider.name, config)
    if refused is not None:
        return await _invalid(
            kube,
            namespace,
            name,
            meta,
            status_before,
            refused,
            now,
            reason="ImageNotAllowed",
            phase="Degraded",
        )

    # -- observe ------------------------------------------------------------------------------------
    spec = rollout_spec(md, history_size=config.history_size, poll_interval=config.poll)
    state = rollout_state(md, spec)
    owner = Owner(name=name, namespace=namespace, uid=meta.get("uid", ""))
    ctx = traffic_context(md, owner, state.stable, state.candidate, config)
    refs = provider.read_back(ctx) if state.desired_weights else []
    # one LIST gives every Deployment of this resource (revisions and router); GET only the rest
    other_refs = [r for r in refs if r.kind != "Deployment"]
    owned, fetched = await asyncio.gather(
        kube.list("apps/v1", "Deployment", namespace, {OWNER_LABEL: owner.label}),
        _read_back(kube, other_refs),
    )
    by_name = {d["metadata"]["name"]: d for d in owned}
    live = {**fetched, **{r: by_name.get(r.name) for r in refs if r.kind == "Deployment"}}
    deployments = [d for d in owned if d["metadata"].get("labels", {}).get(COMPONENT_LABEL) == "serving"]
    live_deployments = {d["metadata"]["labels"].get(REVISION_LABEL): d for d in deployments}
    health = {}
    for rev, dep in live_deployments.items():
        if rev is None:
            continue
        desired = int((dep.get("spec") or {}).get("replicas") or 0)
        status = dep.get("status") or {}
        ready = int(status.get("readyReplicas") or 0)
        observed = status.get("observedGeneration")
        if observed is not None and observed < (dep["metadata"].get("generation") or 0):
            ready = 0  # the readiness belongs to an older spec of this Deployment
        health[rev] = RevisionHealth(ready_replicas=ready, desired_replicas=desired)
    if (
        not provider.gates_readiness()
        and state.candidate
        and state.desired_weights.get(state.candidate, 0) == 0
    ):
        # its pods start only with traffic: readiness is checked by the provider's read-back instead
        health[state.candidate] = RevisionHealth(1, 1)
    readback = Readback(None)
    if state.desired_weights:
        readback = provider.verify(ctx, state.desired_weights, live)
    run = None
    if state.candidate and analysis_due(spec, state, now):
        run = await _run_analysis(md, state.candidate, state.stable, now, config)
    action = requested_action(md)
    events: list[Event] = []
    if action is not None and not isinstance(action, Action):
        events.append(Event("Warning", "UnknownAction", f"unknown {ACTION_ANNOTATION} value {action!r}"))
    observation = Observation(
        revisions=health,
        verified_weights=readback.confirmed,
        effective_weights=readback.effective,
        analysis=run,
        action=action if isinstance(action, Action) else None,
    )

    # -- decide -------------------------------------------------------------------------------------
    decision = decide(spec, state, observation, now)
    events.extend(decision.events)
    new = decision.state

    # -- apply --------------------------------------------------------------------------------------
    target = target_revision(md)
    replicas = provider.replicas(ctx, decision.weights, decision.replicas)
    new_ctx = traffic_context(md, owner, new.stable, new.candidate, config)
    objects: list[Object] = []
    if target in replicas:
        rev = serving_revision(md, owner, target, config)
        objects += [serving_deployment(rev, replicas=replicas[target]), serving_service(owner, target)]
    try:
        objects += provider.reconcile(new_ctx)
        objects += provider.set_weights(new_ctx, decision.weights, decision.shadow)
    except UnsupportedTraffic as exc:
        events.append(Event("Warning", "TrafficUnsupported", str(exc)))

    async def scale(rev_name: str, count: int) -> int:
        dep_name = revision_name(name, rev_name)
        await kube.merge_patch("apps/v1", "Deployment", namespace, dep_name, {"spec": {"replicas": count}})
        cache.pop(f"Deployment/{dep_name}", None)  # the next apply of this revision must not be skipped
        return 1

    async def remove(rev_name: str) -> int:
        for kind, api in (("Deployment", "apps/v1"), ("Service", "v1")):
            await kube.delete(api, kind, namespace, revision_name(name, rev_name))
            cache.pop(f"{kind}/{revision_name(name, rev_name)}", None)
        return 2

    # Within one pass the order does not matter: weights move away from a revision in one pass and
    # it is scaled down only in a later one, once the provider has confirmed its weight is 0.
    scalings = [
        scale(rev_name, count)
        for rev_name, count in replicas.items()
        if rev_name != target
        and (live_dep := live_deployments.get(rev_name)) is not None
        and (live_dep.get("spec") or {}).get("replicas") != count
    ]
    finalize: list[ObjectRef] = []
    last = previous_provider[0] if previous_provider else None
    if last is not None and last != provider.name:
        kept = {(o["kind"], o["metadata"]["name"]) for o in objects}
        finalize = [r for r in provider_for(last).finalize(new_ctx) if (r.kind, r.name) not in kept]
        events.append(
            Event("Normal", "TrafficProviderChanged", f"traffic moved from {last} to {provider.name}")
        )

    async def drop(ref: ObjectRef) -> int:
        await kube.delete(ref.api_version, ref.kind, ref.namespace, ref.name)
        cache.pop(f"{ref.kind}/{ref.name}", None)
        return 1

    signing_key = 0
    if any(o["kind"] == "Deployment" and o["metadata"]["name"] == router_name(owner) for o in objects):
        # before the router pods: they refuse to start without the shared key
        signing_key = await ensure_signing_key(kube, owner, cache)
    done = await asyncio.gather(
        *(apply_cached(kube, obj, cache) for obj in objects),
        *scalings,
        *(remove(r) for r in decision.delete),
    )
    # the old provider's objects go only once the new entry point is applied: a provider switch must
    # never leave a moment in which no object routes traffic to a ready revision
    dropped = await asyncio.gather(*(drop(r) for r in finalize))
    applied = signing_key + sum(done) + sum(dropped)
    if previous_provider is not None:
        previous_provider[:] = [provider.name]
    verified_now = readback.confirmed is not None and _positive(readback.confirmed) == _positive(
        decision.weights
    )
    status = status_from_state(
        new,
        spec,
        md.status,
        verified_now,
        now,
        model_uri=md.spec.model.uri,
        model_version=md.spec.model.version,
    )
    patch = merge_patch_for(status_before, status)
    if patch:
        await kube.merge_patch(
            "mlrollouts.io/v1alpha1",
            "ModelDeployment",
            namespace,
            name,
            {"status": patch},
            subresource="status",
        )
    if decision.clear_action or (action is not None and not isinstance(action, Action)):
        await clear_action(kube, "ModelDeployment", namespace, name)
    metrics.record_state(namespace, name, new.phase, decision.weights)
    for event in events:
        metrics.TRANSITIONS.labels(namespace, name, event.reason).inc()
    return Outcome(decision=decision, events=events, requeue_after=decision.requeue_after, applied=applied)


async def _invalid(
    kube: Kube,
    namespace: str,
    name: str,
    meta: dict[str, Any],
    status_before: dict[str, Any],
    message: str,
    now: datetime,
    reason: str = "InvalidSpec",
    phase: str | None = None,
) -> Outcome:
    """Bad input or a refused one: say which field is wrong in status and an event; touch no child.
    With ``phase`` (e.g. ``Degraded``) the status also shows it, with a ``Degraded`` condition."""
    generation = meta.get("generation") or 0
    status = refused_status(status_before, generation, message, now, reason=reason, phase=phase)
    try:
        await kube.merge_patch(
            "mlrollouts.io/v1alpha1",
            "ModelDeployment",
            namespace,
            name,
            {"status": status},
            subresource="status",
        )
    except KubeError as exc:
        log.warning("could not report the %s of %s/%s: %s", reason, namespace, name, exc)
    return Outcome(decision=None, events=[Event("Warning", reason, message)])
