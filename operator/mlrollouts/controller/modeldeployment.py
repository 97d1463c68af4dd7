"""The ModelDeployment controller: observe -> decide -> apply of one rollout pass.

- observe: the revision Deployments (one LIST), the traffic provider's objects, and Prometheus when
  an analysis run is due;
- decide: :func:`mlrollouts.rollout.decide` (pure, time as an argument);
- apply: server-side apply of the children (owner references), scaling and deletion of the others,
  the old provider's objects after a provider switch; the status comes back in the :class:`Outcome`.

With ``spec.learning.enabled`` one more step follows: the learner (Deployment and Service
``<name>-learner``, its key in Secret ``<name>-snapshot-key``) is applied with the rest; observe reads
the learner's ``/v1/status``, :func:`mlrollouts.learning.decide_learning` decides (pure), and apply
asks the learner for the pin the decision wants and writes ``status.learning``.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar

from pydantic import TypeAdapter

from mlrollouts.analysis import AnalysisContext, run_checks
from mlrollouts.api import MODEL_DEPLOYMENT, LearningStatus, ModelDeployment, Phase
from mlrollouts.api.modeldeployment import HookRecord, LearningPromotion, Strategy
from mlrollouts.builders import (
    LearnerSpec,
    Object,
    Owner,
    ServingLearning,
    ServingRevision,
    learner_deployment,
    learner_name,
    learner_service,
    revision_name,
    router_name,
    serving_deployment,
    serving_service,
)
from mlrollouts.builders.serving import (
    COMPILE_COMPONENT,
    DEFAULT_RESOURCES,
    compile_job,
    compile_job_name,
    job_finished,
    serving_selector,
    weighted_replicas,
)
from mlrollouts.controller import metrics
from mlrollouts.controller.config import OperatorConfig
from mlrollouts.controller.hooks import drive_load, gate_hooks, post_hooks, queue_post_hooks
from mlrollouts.controller.learner import (
    LEARNER_POLL_SECONDS,
    learner_status,
    learner_url,
    set_candidate,
    set_pin,
)
from mlrollouts.controller.learning_canary import (
    CanaryContext,
    SnapshotTraffic,
    canary_step,
    candidate_event,
    candidate_objects,
    candidate_revision,
    fold_candidate_split,
    held_traffic,
    route_weights,
    snapshot_canary_on,
    stale_candidates,
)
from mlrollouts.controller.resource import (
    KindController,
    Outcome,
    Pass,
    Refused,
    intent_status,
    parse_instant,
)
from mlrollouts.core.conditions import Condition, ConditionStatus, condition
from mlrollouts.core.durations import parse_duration
from mlrollouts.core.events import Event
from mlrollouts.core.names import ACTION_ANNOTATION, COMPONENT_LABEL, OWNER_LABEL, REVISION_LABEL
from mlrollouts.core.termination import UNTRUSTED_MODEL_TYPES, untrusted_types
from mlrollouts.learning import (
    LEARNING_HEALTHY,
    LearnerReport,
    LearningDecision,
    Unreachable,
    decide_learning,
    learning_refusal,
    window_of,
)
from mlrollouts.rollout import (
    Action,
    AnalysisRun,
    Decision,
    Observation,
    RevisionHealth,
    RolloutSpec,
    RolloutState,
    analysis_due,
    decide,
)
from mlrollouts.rollout.pods import pods_trouble
from mlrollouts.rollout.resource import (
    requested_action,
    revision_template,
    rollout_spec,
    rollout_state,
    status_from_state,
    target_revision,
)
from mlrollouts.traffic import (
    ObjectRef,
    Readback,
    TrafficContext,
    TrafficRouter,
    UnsupportedTraffic,
    provider_for,
)
from mlrollouts.traffic.base import positive

Obj = dict[str, Any]
KINDS_OF_LEARNER = (("Deployment", "apps/v1"), ("Service", "v1"))


def serving_revision(
    md: ModelDeployment, owner: Owner, revision: str, config: OperatorConfig
) -> ServingRevision:
    serving = md.spec.serving
    extra_args: list[str] = list(serving.args)
    if md.spec.model.allow_unsafe_pickle:
        extra_args.append("--allow-unsafe-pickle")
    for trusted in md.spec.model.trusted_types:
        extra_args += ["--trust-type", trusted]
    return ServingRevision(
        owner=owner,
        revision=revision,
        model_name=md.served_model_name,
        model_uri=md.spec.model.uri,
        model_format=md.spec.model.format.value,
        image=serving.image or config.serving_image,
        replicas=serving.replicas,
        resources=serving_resources(md),
        env={REFUSED_MODEL_EXIT_ENV: "true", **{e.name: e.value for e in serving.env}},
        extra_args=tuple(extra_args),
        learning=serving_learning(md, owner, config),
        compile_cache_claim=(
            cache.persistent_volume_claim.claim_name if (cache := md.spec.model.compile_cache) else None
        ),
    )


COMPILING = "Compiling"
"""Why a revision with a compile cache is not ready while its compile Job runs."""

REFUSED_MODEL_EXIT_ENV = "MLSERVING_EXIT_ON_REFUSED_MODEL"
"""Asks the model server to exit with a report when it refuses its model for good (see
:mod:`mlrollouts.core.termination`)."""


async def untrusted_model_refusal(md: ModelDeployment, owner: Owner, ctx: Pass) -> str | None:
    """Why the revision the spec asks for cannot serve: its server refused the model file's types.

    Only a skops model can be refused so; a resource Healthy at this generation has served it."""
    if md.spec.model.format.value == "onnx" or md.spec.model.uri.lower().endswith(".onnx"):
        return None
    status = md.status
    if (
        status is not None
        and status.phase == "Healthy"
        and status.observed_generation == md.metadata.generation
    ):
        return None
    selector = {OWNER_LABEL: owner.label, REVISION_LABEL: target_revision(md)}
    found = untrusted_types(await ctx.kube.list("v1", "Pod", owner.namespace, selector))
    return None if found is None else found.message(md.spec.model.trusted_types)


def serving_resources(md: ModelDeployment) -> dict[str, Any]:
    """CPU and memory of each serving (and learner) container."""
    requests, limits = md.spec.serving.resources.requests, md.spec.serving.resources.limits
    resources = {
        **({"requests": dict(requests)} if requests else {}),
        **({"limits": dict(limits)} if limits else {}),
    }
    return resources or copy.deepcopy(DEFAULT_RESOURCES)


def learning_enabled(md: ModelDeployment) -> bool:
    return md.spec.learning is not None and md.spec.learning.enabled


def serving_learning(md: ModelDeployment, owner: Owner, config: OperatorConfig) -> ServingLearning | None:
    learning = md.spec.learning
    if learning is None or not learning.enabled or learning.storage is None:
        return None
    return ServingLearning(
        learner_url=learner_url(owner, config.upstream_template), snapshot_uri=learning.storage.uri
    )


def learner_spec(md: ModelDeployment, owner: Owner, config: OperatorConfig) -> LearnerSpec:
    learning = md.spec.learning
    assert learning is not None and learning.storage is not None
    serving = md.spec.serving
    return LearnerSpec(
        owner=owner,
        model_name=md.served_model_name,
        model_uri=md.spec.model.uri,
        storage_uri=learning.storage.uri,
        image=serving.image or config.serving_image,
        resources=serving_resources(md),
        algorithm=learning.algorithm.value if learning.algorithm else None,
        params=dict(learning.params),
        snapshot_every=learning.snapshot_every,
        batch_size=learning.feedback.batch_size,
        window=window_of(learning),
        max_delay_seconds=parse_duration(learning.feedback.max_delay),
        label_field=learning.feedback.label_field,
        allow_unsafe_pickle=md.spec.model.allow_unsafe_pickle,
        env={e.name: e.value for e in serving.env},
        hold_serving=learning.promotion is LearningPromotion.CANARY,
        keep_snapshots=learning.snapshots.keep,
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
    return config.image_refusal(images)


def revision_health(deployments: dict[str | None, Obj]) -> dict[str, RevisionHealth]:
    """Ready and desired replicas per revision; readiness of an older spec does not count."""
    health = {}
    for rev, dep in deployments.items():
        if rev is None:
            continue
        desired = int((dep.get("spec") or {}).get("replicas") or 0)
        status = dep.get("status") or {}
        ready = int(status.get("readyReplicas") or 0)
        observed = status.get("observedGeneration")
        if observed is not None and observed < (dep["metadata"].get("generation") or 0):
            ready = 0
        health[rev] = RevisionHealth(ready_replicas=ready, desired_replicas=desired)
    return health


async def with_pod_trouble(
    health: dict[str, RevisionHealth], revisions: list[str | None], owner: Owner, ctx: Pass
) -> dict[str, RevisionHealth]:
    """``health`` with the reason the pods give for each of ``revisions`` that is not ready (one LIST
    of its pods, only while it is not ready)."""
    waiting = [r for r in dict.fromkeys(revisions) if r and r in health and not health[r].ready]
    if not waiting:
        return health
    listed = await asyncio.gather(
        *(
            ctx.kube.list("v1", "Pod", owner.namespace, {OWNER_LABEL: owner.label, REVISION_LABEL: r})
            for r in waiting
        )
    )
    out = dict(health)
    for rev, pods in zip(waiting, listed, strict=True):
        if health[rev].reason != COMPILING:  # an ended compile Job's pod says nothing of the replicas
            pods = [
                p
                for p in pods
                if (p["metadata"].get("labels") or {}).get(COMPONENT_LABEL) != COMPILE_COMPONENT
            ]
        trouble = pods_trouble(pods)
        if trouble is not None:
            out[rev] = dataclasses.replace(out[rev], reason=trouble.reason, message=trouble.message)
    return out


async def run_analysis(
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
    for r in results:
        metrics.ANALYSIS.labels(md.metadata.namespace, md.metadata.name, r.name, r.verdict.value).inc()
    return AnalysisRun(now, tuple(results), revision=candidate)


@dataclass
class Observed:
    """What one pass saw of a ModelDeployment's world."""

    spec: RolloutSpec
    state: RolloutState
    owner: Owner
    provider: TrafficRouter
    deployments: dict[str | None, Obj]
    readback: Readback
    observation: Observation
    events: list[Event]
    learner: Obj | None = None
    """The learner Deployment, when one exists."""
    snapshot_split: tuple[int, int] | None = None
    """(stable, candidate) snapshot Deployments' share of the stable revision (promotion Canary)."""
    hooks: list[HookRecord] = field(default_factory=list)
    """``status.hooks``: the calls of the rollout hooks, with this pass's results."""
    compile_job: Obj | None = None
    """The compile Job of the target revision, read while that revision has no Deployment yet."""
    compiling: bool = False
    """The target revision's model is still to be compiled: its Deployment waits for the Job."""


async def _live_objects(
    kube: Any, owner: Owner, refs: list[ObjectRef]
) -> tuple[list[Obj], dict[ObjectRef, Obj | None]]:
    """One LIST gives every Deployment of the resource (revisions and router); GET only the rest."""
    others = [r for r in refs if r.kind != "Deployment"]
    owned, fetched = await asyncio.gather(
        kube.list("apps/v1", "Deployment", owner.namespace, {OWNER_LABEL: owner.label}),
        asyncio.gather(*(kube.get(r.api_version, r.kind, r.namespace, r.name) for r in others)),
    )
    by_name = {d["metadata"]["name"]: d for d in owned}
    live = dict(zip(others, fetched, strict=True))
    live.update({r: by_name.get(r.name) for r in refs if r.kind == "Deployment"})
    return owned, live


async def observe(md: ModelDeployment, provider: TrafficRouter, owner: Owner, ctx: Pass) -> Observed:
    spec = rollout_spec(md, history_size=ctx.config.history_size, poll_interval=ctx.config.poll)
    state = rollout_state(md, spec)
    traffic = traffic_context(md, owner, state.stable, state.candidate, ctx.config)
    refs = provider.read_back(traffic) if state.desired_weights else []
    owned, live = await _live_objects(ctx.kube, owner, refs)
    serving = [d for d in owned if d["metadata"].get("labels", {}).get(COMPONENT_LABEL) == "serving"]
    learner = next((d for d in owned if d["metadata"]["name"] == learner_name(owner)), None)
    deployments = {d["metadata"]["labels"].get(REVISION_LABEL): d for d in serving}
    health = revision_health(deployments)
    job, compiling = await compile_state(md, owner, deployments, ctx)
    if compiling:
        health[target_revision(md)] = RevisionHealth(
            0, 1, reason=COMPILING, message=compiling_message(owner, target_revision(md), job)
        )
    if (
        not provider.gates_readiness()
        and state.candidate
        and state.desired_weights.get(state.candidate, 0) == 0
    ):
        # its pods start only with traffic: readiness is checked by the provider's read-back instead
        health[state.candidate] = RevisionHealth(1, 1)
    health = await with_pod_trouble(health, [state.stable, state.candidate], owner, ctx)
    readback = (
        provider.verify(traffic, state.desired_weights, live) if state.desired_weights else Readback(None)
    )
    split = None
    if snapshot_canary_on(md):
        readback, split = fold_candidate_split(readback, state.stable)
    run = None
    if state.candidate and analysis_due(spec, state, ctx.now):
        run = await run_analysis(md, state.candidate, state.stable, ctx.now, ctx.config)
    action = requested_action(md)
    events = []
    if action is not None and not isinstance(action, Action):
        events.append(Event("Warning", "UnknownAction", f"unknown {ACTION_ANNOTATION} value {action!r}"))
    observation = Observation(
        revisions=health,
        verified_weights=readback.confirmed,
        effective_weights=readback.effective,
        analysis=run,
        action=action if isinstance(action, Action) else None,
    )
    return Observed(
        spec,
        state,
        owner,
        provider,
        deployments,
        readback,
        observation,
        events,
        learner,
        split,
        compile_job=job,
        compiling=compiling,
    )


async def compile_state(
    md: ModelDeployment, owner: Owner, deployments: dict[str | None, Obj], ctx: Pass
) -> tuple[Obj | None, bool]:
    """The target revision's compile Job and whether its Deployment must still wait for it: with a
    compile cache, a revision without a Deployment gets one only once its Job has ended. A revision
    that has a Deployment compiled already (or predates the cache): no request is made."""
    target = target_revision(md)
    if md.spec.model.compile_cache is None or target in deployments:
        return None, False
    job = await ctx.kube.get("batch/v1", "Job", owner.namespace, compile_job_name(owner, target))
    return job, job_finished(job) is None


def compiling_message(owner: Owner, revision: str, job: Obj | None) -> str:
    name = compile_job_name(owner, revision)
    failed = int(((job or {}).get("status") or {}).get("failed") or 0)
    tries = f", {failed} failed attempt{'s' if failed != 1 else ''}" if failed else ""
    return f"compiling the model into the compile cache (Job {name}{tries})"


def compile_events(owner: Owner, revision: str, job: Obj | None, started: bool) -> list[Event]:
    """What a pass that starts a compile, or creates the Deployment after one, tells."""
    name = compile_job_name(owner, revision)
    if started:
        return [
            Event(
                "Normal",
                "CompileStarted",
                f"{revision}: compiling the model once for every replica (Job {name})",
            )
        ]
    ended = job_finished(job)
    if ended is None:
        return []
    status = (job or {}).get("status") or {}
    if ended == "Complete":
        took = seconds_between(status.get("startTime"), status.get("completionTime"))
        spent = f" in {took:.0f}s" if took is not None else ""
        return [
            Event(
                "Normal", "Compiled", f"{revision}: model compiled{spent} (Job {name}); starting its replicas"
            )
        ]
    why = next(
        (
            c.get("message") or c.get("reason") or ""
            for c in status.get("conditions") or []
            if c.get("type") == "Failed"
        ),
        "",
    )
    return [
        Event(
            "Warning",
            "CompileFailed",
            f"{revision}: Job {name} failed{': ' + why if why else ''}; each replica compiles the model itself",
        )
    ]


def seconds_between(start: Any, end: Any) -> float | None:
    first, last = parse_instant(start), parse_instant(end)
    return None if first is None or last is None else (last - first).total_seconds()


async def observe_hooks(md: ModelDeployment, seen: Observed, ctx: Pass) -> None:
    """Call the gating rollout hooks due now; the decision reads their results as gates."""
    candidate = seen.state.candidate
    health = seen.observation.revisions.get(candidate or "")
    ready = health is not None and health.ready
    seen.hooks, hook_gates = await gate_hooks(md, seen.state, ready, seen.observation.action, ctx.now)
    seen.observation = dataclasses.replace(seen.observation, hook_gates=hook_gates)


def desired_objects(
    md: ModelDeployment,
    seen: Observed,
    decision: Decision,
    ctx: Pass,
    events: list[Event],
    snapshots: SnapshotTraffic | None = None,
) -> tuple[list[Object], dict[str, int]]:
    """The children this decision wants applied, and the replicas of every revision."""
    target = target_revision(md)
    new = decision.state
    traffic = traffic_context(md, seen.owner, new.stable, new.candidate, ctx.config)
    replicas = planned_replicas(md, seen, decision, traffic)
    objects: list[Object] = []
    if target in replicas and not seen.compiling:
        rev = serving_revision(md, seen.owner, target, ctx.config)
        objects += [serving_deployment(rev, replicas=replicas[target]), serving_service(seen.owner, target)]
        if md.spec.model.compile_cache is not None and target not in seen.deployments:
            events += compile_events(seen.owner, target, seen.compile_job, started=False)
    if learning_enabled(md):
        objects += [learner_deployment(learner_spec(md, seen.owner, ctx.config)), learner_service(seen.owner)]
    if snapshot_canary_on(md) and new.candidate is None and new.stable == target:
        objects += candidate_objects(md, serving_revision(md, seen.owner, target, ctx.config))
    weights, shadow = route_weights(decision.weights, decision.shadow, snapshots)
    try:
        objects += seen.provider.reconcile(traffic)
        objects += seen.provider.set_weights(traffic, weights, shadow)
    except UnsupportedTraffic as exc:
        events.append(Event("Warning", "TrafficUnsupported", str(exc)))
    return objects, replicas


def split_by_weight(
    md: ModelDeployment, seen: Observed, decision: Decision, planned: dict[str, int]
) -> dict[str, int]:
    """``spec.serving.replicas`` (an autoscaler's target) shared by stable and candidate by weight."""
    new = decision.state
    health = seen.observation.revisions.get(new.candidate or "")
    return weighted_replicas(
        md.spec.serving.replicas,
        decision.weights,
        planned,
        stable=new.stable,
        candidate=new.candidate,
        shadow=decision.shadow,
        candidate_ready=health.ready_replicas if health else 0,
    )


def planned_replicas(
    md: ModelDeployment, seen: Observed, decision: Decision, traffic: TrafficContext
) -> dict[str, int]:
    replicas = seen.provider.replicas(traffic, decision.weights, decision.replicas)
    # the Service provider splits by replicas itself; blue/green keeps a full-size preview to switch to
    if seen.provider.gates_readiness() and seen.spec.strategy is Strategy.CANARY:
        replicas = split_by_weight(md, seen, decision, replicas)
    return replicas


def replicas_settling(md: ModelDeployment, seen: Observed, decision: Decision, ctx: Pass) -> bool:
    """Whether the pods are still catching up with the planned replicas: the split waits for candidate
    pods to be ready before the stable shrinks, and ``status.replicas`` must follow the pods, so the
    passes that see them come without a timer of the rollout's own."""
    new = decision.state
    traffic = traffic_context(md, seen.owner, new.stable, new.candidate, ctx.config)
    for rev, count in planned_replicas(md, seen, decision, traffic).items():
        live = seen.deployments.get(rev)
        if live is not None and (live.get("status") or {}).get("replicas", 0) != count:
            return True
    health = seen.observation.revisions.get(new.candidate or "")
    return health is not None and health.ready_replicas < health.desired_replicas


def provider_leftovers(
    md: ModelDeployment, seen: Observed, decision: Decision, objects: list[Object], ctx: Pass
) -> tuple[list[ObjectRef], list[Event]]:
    """After ``spec.traffic.provider`` changed: the old provider's objects the new one does not keep."""
    last = ctx.memory.get("provider")
    if last is None or last == seen.provider.name:
        return [], []
    new = decision.state
    traffic = traffic_context(md, seen.owner, new.stable, new.candidate, ctx.config)
    kept = {(o["kind"], o["metadata"]["name"]) for o in objects}
    leftovers = [r for r in provider_for(last).finalize(traffic) if (r.kind, r.name) not in kept]
    event = Event("Normal", "TrafficProviderChanged", f"traffic moved from {last} to {seen.provider.name}")
    return leftovers, [event]


def rollout_status(
    md: ModelDeployment, seen: Observed, decision: Decision, verified: bool, now: datetime
) -> Obj:
    status = status_from_state(
        decision.state,
        seen.spec,
        md.status,
        verified,
        now,
        model_uri=md.spec.model.uri,
        model_version=md.spec.model.version,
        template=revision_template(md),
    )
    hooks = {"hooks": [h.model_dump(mode="json", by_alias=True, exclude_none=True) for h in seen.hooks]}
    return {**status, **scale_status(seen), **(hooks if seen.hooks else {})}


def scale_status(seen: Observed) -> Obj:
    """What the scale subresource reports: the serving pods of every revision and their selector."""
    pods = sum(
        int((d.get("status") or {}).get("replicas") or 0) for rev, d in seen.deployments.items() if rev
    )
    return {"replicas": pods, "selector": serving_selector(seen.owner)}


async def record_intent(md: ModelDeployment, seen: Observed, decision: Decision, ctx: Pass) -> bool:
    """Write the decided status before the traffic provider is told to move the weights.

    The status is what a restarted operator resumes from: were the route written first and the
    operator killed before its status write, the new process would decide from the older step and
    move the weights back. With the intent recorded first, a kill between the two writes leaves a
    status asking for weights the route does not have yet, and the next pass writes them forward.
    Returns whether a write was needed."""
    before, after = seen.state, decision.state
    if positive(before.desired_weights) == positive(after.desired_weights) and before.shadow == after.shadow:
        return False
    previous = md.status.model_dump(mode="json", by_alias=True, exclude_none=True) if md.status else {}
    kept = next((c for c in (md.status.conditions if md.status else ()) if c.type == LEARNING_HEALTHY), None)
    intent = with_learning(
        rollout_status(md, seen, decision, False, ctx.now),
        LearningStep(status=previous.get("learning"), condition=kept),
    )
    return await ctx.writer.status(previous, intent_status(intent, ctx, decision.clear_action))


async def apply(
    md: ModelDeployment,
    seen: Observed,
    decision: Decision,
    ctx: Pass,
    snapshots: SnapshotTraffic | None = None,
) -> list[Event]:
    """Write what the decision wants; returns the events of the apply step."""
    events: list[Event] = []
    children, owner = ctx.children, seen.owner
    objects, replicas = desired_objects(md, seen, decision, ctx, events, snapshots)
    target = target_revision(md)
    # Within one pass the order does not matter: weights move away from a revision in one pass and
    # it is scaled down only in a later one, once the provider has confirmed its weight is 0.
    scalings = [
        children.scale(revision_name(owner.name, rev), count)
        for rev, count in replicas.items()
        if rev != target
        and (live := seen.deployments.get(rev)) is not None
        and (live.get("spec") or {}).get("replicas") != count
    ]
    removals = [
        children.delete(api, kind, revision_name(owner.name, rev))
        for rev in decision.delete
        for kind, api in (("Deployment", "apps/v1"), ("Service", "v1"))
    ]
    removals += [
        children.delete("batch/v1", "Job", compile_job_name(owner, rev))
        for rev in decision.delete
        if md.spec.model.compile_cache is not None
    ]
    if seen.compiling and seen.compile_job is None and target in replicas:
        job = compile_job(serving_revision(md, owner, target, ctx.config))
        if await children.create(job):
            events += compile_events(owner, target, None, started=True)
    removals += [
        children.delete(api, kind, revision_name(owner.name, rev))
        for rev in stale_candidate_revisions(md, seen, decision)
        for kind, api in (("Deployment", "apps/v1"), ("Service", "v1"))
    ]
    leftovers, switched = provider_leftovers(md, seen, decision, objects, ctx)
    events += switched
    if any(o["kind"] == "Deployment" and o["metadata"]["name"] == router_name(owner) for o in objects):
        await children.ensure_signing_key(owner)  # before the router pods: they need the key to start
    if learning_enabled(md):
        await children.ensure_snapshot_key(owner)  # before the learner and serving pods mount it
    elif seen.learner is not None:  # learning was turned off: the learner goes, its storage stays
        removals += [children.delete(api, kind, learner_name(owner)) for kind, api in KINDS_OF_LEARNER]
    await asyncio.gather(*(children.apply(obj) for obj in objects), *scalings, *removals)
    # the old provider's objects go only once the new entry point is applied: a provider switch must
    # never leave a moment in which no object routes traffic to a ready revision
    await asyncio.gather(*(children.delete(r.api_version, r.kind, r.name) for r in leftovers))
    ctx.memory["provider"] = seen.provider.name
    return events


def stale_candidate_revisions(md: ModelDeployment, seen: Observed, decision: Decision) -> list[str]:
    """Candidate-snapshot Deployments no snapshot canary uses (kept while a model rollout runs)."""
    if not snapshot_canary_on(md):
        return stale_candidates(seen.deployments, None)
    stable = decision.state.stable
    if decision.state.candidate is not None or stable is None:
        return []
    return stale_candidates(seen.deployments, candidate_revision(stable))


@dataclass
class LearningStep:
    """What the learning step of a pass wants in the status, and its events."""

    status: Obj | None = None
    """``status.learning`` (camelCase JSON); None when learning is off."""
    condition: Condition | None = None
    events: list[Event] = field(default_factory=list)
    snapshots: SnapshotTraffic | None = None
    """The candidate snapshot's share of traffic (promotion Canary)."""


_CONDITION = TypeAdapter(Condition)


async def reconcile_learning(
    md: ModelDeployment, owner: Owner, ctx: Pass, seen: Observed, rollout: Decision
) -> LearningStep:
    """Observe the learner, decide (pure), apply the pin (and the snapshot canary's candidate);
    nothing when learning is off."""
    learning = md.spec.learning
    if learning is None or not learning.enabled:
        return LearningStep()
    url = learner_url(owner, ctx.config.upstream_template)
    report = await learner_status(url)
    status = md.status
    previous = status.learning if status else None
    canary_on = snapshot_canary_on(md)
    decision = decide_learning(
        learning,
        previous,
        report,
        ctx.now,
        conditions=status.conditions if status else (),
        generation=md.metadata.generation,
        canary_stable=previous.canary.stable_snapshot if canary_on and previous and previous.canary else None,
    )
    if not canary_on:  # promotion Direct: a canary's state and pin from before are dropped
        dropped = decision.status.model_copy(update={"canary": None})
        return await apply_pin(md, url, report, dataclasses.replace(decision, status=dropped), ctx)
    if not isinstance(report, LearnerReport) or not report.ready:
        step = await apply_pin(md, url, report, decision, ctx)
        return dataclasses.replace(step, snapshots=held_traffic(md, rollout.state.stable))
    health = revision_health(seen.deployments)
    canary_ctx = CanaryContext(rollout, health, seen.snapshot_split, ctx.now, ctx.config)
    decision, snapshots = await canary_step(md, report, decision, canary_ctx)
    step = await apply_pin(md, url, report, decision, ctx)
    canary = decision.status.canary
    wanted = canary.candidate_snapshot if canary is not None else None
    if wanted != report.candidate:
        step.events += candidate_event(await set_candidate(url, wanted), wanted)
    return dataclasses.replace(step, snapshots=snapshots)


async def apply_pin(
    md: ModelDeployment, url: str, report: LearnerReport | Unreachable, decision: LearningDecision, ctx: Pass
) -> LearningStep:
    """Ask the learner for the decided pin; when it refuses or does not answer, the status keeps
    what the learner holds and says why (one event per new reason)."""
    learning, cond, events = decision.status, decision.condition, list(decision.events)
    problem = await set_pin(url, decision.pin) if decision.pin_changed else None
    if problem is None:
        ctx.memory.pop("learning_pin_problem", None)
        return LearningStep(_json(learning), cond, events)
    assert isinstance(report, LearnerReport)  # a pin is decided only from a learner's report
    wanted = "follow the newest snapshot" if decision.pin is None else f"pin snapshot {decision.pin}"
    message = f"cannot {wanted}: {problem}"
    held = learning.pinned_by if report.pinned == learning.pinned else None
    learning = learning.model_copy(
        update={
            "pinned": report.pinned,
            "pinned_by": held,
            "serving_snapshot": report.serving,
            "message": message,
        }
    )
    previous = md.status.conditions if md.status else ()
    cond = condition(
        LEARNING_HEALTHY,
        ConditionStatus.FALSE,
        "PinFailed",
        message,
        previous=previous,
        now=ctx.now,
        generation=md.metadata.generation,
    )
    events = [e for e in events if e.reason not in ("SnapshotPinned", "SnapshotUnpinned")]
    if ctx.memory.get("learning_pin_problem") != message:
        events.append(Event.warning("PinFailed", message))
    ctx.memory["learning_pin_problem"] = message
    return LearningStep(_json(learning), cond, events)


def _json(learning: LearningStatus) -> Obj:
    return learning.model_dump(mode="json", by_alias=True, exclude_none=True)


def with_learning(status: Obj, step: LearningStep) -> Obj:
    """The rollout's status with ``status.learning`` and the ``LearningHealthy`` condition."""
    conditions = [c for c in status.get("conditions", []) if c.get("type") != LEARNING_HEALTHY]
    if step.condition is not None:
        conditions.append(
            _CONDITION.dump_python(step.condition, mode="json", by_alias=True, exclude_none=True)
        )
    result = {**status, "conditions": conditions}
    result.pop("learning", None)
    if step.status is not None:
        result["learning"] = step.status
    return result


def requeue_for_handover(md: ModelDeployment, seen: Observed, decision: Decision, ctx: Pass) -> float | None:
    requeue = decision.requeue_after
    if not seen.compiling and not replicas_settling(md, seen, decision, ctx):
        return requeue
    return ctx.config.poll if requeue is None else min(requeue, ctx.config.poll)


def requeue_with_learning(md: ModelDeployment, requeue_after: float | None) -> float | None:
    """A learning deployment is looked at every few seconds, whatever its rollout does."""
    if not learning_enabled(md):
        return requeue_after
    return LEARNER_POLL_SECONDS if requeue_after is None else min(requeue_after, LEARNER_POLL_SECONDS)


class ModelDeploymentController(KindController):
    kind = MODEL_DEPLOYMENT
    phases: ClassVar[tuple[str, ...]] = tuple(p.value for p in Phase)

    async def reconcile(self, resource: Any, ctx: Pass) -> Outcome:
        md: ModelDeployment = resource
        try:
            provider = provider_for(md.spec.traffic.provider.value)
        except ValueError as exc:
            raise Refused(str(exc)) from None
        refused = disallowed_image(md, provider.name, ctx.config)
        if refused is not None:
            raise Refused(refused, reason="ImageNotAllowed")
        if refused := ctx.config.model_uri_refusal(md.spec.model.uri, "spec.model.uri"):
            raise Refused(refused, reason="ModelURINotAllowed")
        refused = learning_refusal(md.spec)
        if refused is not None:
            raise Refused(refused)
        meta = md.metadata
        owner = Owner(name=meta.name or "", namespace=meta.namespace or "", uid=meta.uid or "")
        if refused := await untrusted_model_refusal(md, owner, ctx):
            raise Refused(refused, reason=UNTRUSTED_MODEL_TYPES)
        seen = await observe(md, provider, owner, ctx)
        await observe_hooks(md, seen, ctx)
        decision = decide(seen.spec, seen.state, seen.observation, ctx.now)
        seen.hooks = queue_post_hooks(md, seen.hooks, seen.state, decision.state, ctx.now)
        if await record_intent(md, seen, decision, ctx):
            ctx.committed.extend(decision.events)
        # the learner's pin and the snapshot canary's share are decided before the route is written
        learning = await reconcile_learning(md, owner, ctx, seen, decision)
        events = [*seen.events, *decision.events, *await apply(md, seen, decision, ctx, learning.snapshots)]
        events += learning.events
        seen.hooks = await post_hooks(md, seen.hooks, decision.state.phase.value, ctx.now)
        await drive_load(
            md, decision.state, seen.spec.effective_steps(), ctx.memory, ctx.config.upstream_template, ctx.now
        )
        confirmed = seen.readback.confirmed
        verified_now = confirmed is not None and positive(confirmed) == positive(decision.weights)
        status = rollout_status(md, seen, decision, verified_now, ctx.now)
        unknown_action = seen.observation.action is None and requested_action(md) is not None
        return Outcome(
            status=with_learning(status, learning),
            events=events,
            requeue_after=requeue_with_learning(md, requeue_for_handover(md, seen, decision, ctx)),
            clear_action=decision.clear_action or unknown_action,
            decision=decision,
        )

    def progress_key(self, status: Obj) -> Any:
        analysis = status.get("analysis") or {}
        return (
            status.get("phase"),
            status.get("currentStep"),
            status.get("stableRevision"),
            status.get("candidateRevision"),
            parse_instant(analysis.get("lastRunAt")),
        )

    def record(self, namespace: str, name: str, outcome: Outcome) -> None:
        decision: Decision | None = outcome.decision
        if decision is not None:
            metrics.set_phase(metrics.PHASE, namespace, name, self.phases, decision.state.phase.value)
            metrics.set_values(metrics.WEIGHT, namespace, name, decision.weights)
        for event in outcome.events:
            metrics.TRANSITIONS.labels(namespace, name, event.reason).inc()

    def forget(self, namespace: str, name: str) -> None:
        metrics.forget(namespace, name, (metrics.PHASE, metrics.WEIGHT))
