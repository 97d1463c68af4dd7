"""The Experiment controller: kopf handlers that only wire events to one observe -> plan -> apply pass.

- observe: the ModelDeployments behind the variants (their stable revision and served model name,
  read from their status; their specs are never written), and when an evaluation is due, the
  per-variant rewards (router feedback metrics or the spec's query) and guardrails from Prometheus;
- plan: :func:`mlrollouts.rollout.experiment_plan.plan` (pure, time as an argument);
- apply: the router objects, the signing-key Secret (created once), the route table ConfigMap with
  the planned weights, one status merge patch, events, and removal of a handled action annotation.

A timer per Experiment ticks every ``tick`` seconds; a pass does work only when an evaluation is due
(``status.lastUpdateAt + spec.interval``), so a restarted operator resumes from the status.

Wiring: ``register(registry, tick)`` adds the handlers to an operator registry that already has the
login/startup/cleanup handlers of :mod:`mlrollouts.controller.handlers`; :func:`registry` builds a
registry with only the Experiment controller.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import kopf
from prometheus_client import Counter, Gauge
from pydantic import ValidationError

from mlrollouts.analysis import AnalysisContext, QueryError, prometheus_provider, read_rewards, run_checks
from mlrollouts.api import format_validation_error
from mlrollouts.api.common import parse_duration
from mlrollouts.api.experiment import (
    Experiment,
    ExperimentPhase,
    ExperimentTrafficProvider,
    RewardDistribution,
    RewardSource,
)
from mlrollouts.builders.common import ACTION_ANNOTATION
from mlrollouts.builders.experiment import (
    SIGNING_KEY_FIELD,
    Arm,
    experiment_owner,
    experiment_route_configmap,
    experiment_route_table,
    experiment_router_objects,
)
from mlrollouts.controller import handlers, metrics
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
from mlrollouts.rollout.experiment_plan import (
    TERMINAL,
    ExperimentObservation,
    ExperimentPlan,
    GuardrailOutcome,
    PlanEvent,
    RewardCounts,
    VariantTarget,
    evaluation_due,
    plan,
)

GROUP = "mlrollouts.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
PLURAL = "experiments"
KIND = "Experiment"

log = logging.getLogger("mlrollouts.controller.experiments")

Obj = dict[str, Any]


async def _patch_experiment(kube: Kube, namespace: str, name: str, patch: Obj, status: bool = False) -> None:
    await kube.merge_patch(
        API_VERSION, KIND, namespace, name, patch, subresource="status" if status else None
    )


# --- observe -------------------------------------------------------------------------------------


def _target_of(variant: str, md_name: str, md: Obj | None) -> VariantTarget:
    if md is None:
        return VariantTarget(variant, md_name, problem=f"ModelDeployment {md_name!r} not found")
    model = ((md.get("spec") or {}).get("model") or {}).get("name") or md_name
    revision = (md.get("status") or {}).get("stableRevision")
    if not revision:
        return VariantTarget(
            variant, md_name, model=model, problem=f"ModelDeployment {md_name!r} has no stable revision yet"
        )
    return VariantTarget(variant, md_name, model=model, revision=revision)


async def observe_targets(kube: Kube, exp: Experiment) -> dict[str, VariantTarget]:
    """Each variant's serving target, from its ModelDeployment's status (read only)."""
    namespace = exp.metadata.namespace or ""
    names = sorted({v.model_deployment for v in exp.spec.variants})
    found = await asyncio.gather(*(kube.get(API_VERSION, "ModelDeployment", namespace, n) for n in names))
    by_name = dict(zip(names, found, strict=True))
    return {
        v.name: _target_of(v.name, v.model_deployment, by_name[v.model_deployment]) for v in exp.spec.variants
    }


async def observe_metrics(
    exp: Experiment, targets: dict[str, VariantTarget], now: datetime, config: OperatorConfig
) -> tuple[dict[str, RewardCounts] | str, dict[str, list[GuardrailOutcome]]]:
    """Rewards since the start and each variant's guardrails, evaluated at ``now``."""
    spec, status = exp.spec, exp.status
    namespace, name = exp.metadata.namespace or "", exp.metadata.name or ""
    address = (spec.prometheus.address if spec.prometheus else None) or config.prometheus_url
    if not address:
        return "no Prometheus address: set spec.prometheus.address or the operator's --prometheus-url", {}
    timeout = parse_duration(spec.prometheus.timeout) if spec.prometheus else config.prometheus_timeout
    try:
        provider = prometheus_provider(address, timeout)
    except ValueError as exc:
        return f"spec.prometheus: {exc}", {}
    at = now.timestamp()
    started = status.started_at if status is not None else None
    assert started is not None
    since = (started if started.tzinfo else started.replace(tzinfo=UTC)).timestamp()
    wait = parse_duration(spec.reward.reward_wait)
    rewards_task = read_rewards(
        provider,
        route=name,
        variants=[v.name for v in spec.variants],
        since=since,
        now=at,
        reward_query=spec.reward.query if spec.reward.source is RewardSource.QUERY else None,
        variables={"namespace": namespace, "name": name},
        reward_wait=wait if wait > 0 else None,
        # Gaussian rewards from a custom query are refused by the plan (no sum of squares).
        gaussian=spec.reward.distribution is RewardDistribution.GAUSSIAN
        and spec.reward.source is RewardSource.FEEDBACK,
    )
    already = {v.name for v in (status.variants if status else []) if v.guardrail.value == "Breached"}

    async def guardrails_of(variant: str) -> list[GuardrailOutcome]:
        target = targets[variant]
        if not spec.guardrails or variant in already:
            return []
        context = AnalysisContext(
            namespace=namespace,
            name=name,
            model=target.model or "",
            revision=target.revision or "",
            variant=variant,
            interval=spec.interval,
            provider=provider,
        )
        results = await run_checks(spec.guardrails, context, at=at)
        return [GuardrailOutcome(r.name, r.verdict.value, r.message, r.value) for r in results]

    names = [v.name for v in spec.variants]
    checks_task = asyncio.gather(*(guardrails_of(n) for n in names))
    rewards, checks = await asyncio.gather(rewards_task, checks_task)
    guardrails = dict(zip(names, checks, strict=True))
    if isinstance(rewards, QueryError):
        return rewards.reason, guardrails
    counts = {
        k: RewardCounts(r.requests, r.feedback, r.reward_sum, r.reward_sum_squares or 0.0)
        for k, r in rewards.items()
    }
    return counts, guardrails


# --- one pass --------------------------------------------------------------------------------------


@dataclass
class Outcome:
    plan: ExperimentPlan | None
    events: list[PlanEvent] = field(default_factory=list)
    requeue_after: float | None = None
    applied: int = 0
    wrote: bool = False
    """Whether the Experiment itself was patched (status or annotations)."""


def _status_dict(plan_: ExperimentPlan) -> Obj:
    return plan_.status.model_dump(mode="json", by_alias=True, exclude_none=True)


async def reconcile_experiment(
    body: Obj,
    kube: Kube,
    config: OperatorConfig,
    now: datetime | None = None,
    applied_cache: dict[str, str] | None = None,
) -> Outcome:
    """One observe -> plan -> apply pass over the Experiment ``body`` (as kopf hands it over)."""
    now = now or datetime.now(UTC)
    cache = applied_cache if applied_cache is not None else {}
    meta = body.get("metadata") or {}
    namespace, name = meta.get("namespace", ""), meta.get("name", "")
    status_before = dict(body.get("status") or {})
    try:
        exp = Experiment.model_validate(dict(body))
    except ValidationError as exc:
        return await _invalid(kube, namespace, name, meta, status_before, format_validation_error(exc), now)
    if exp.spec.traffic.provider is not ExperimentTrafficProvider.ROUTER:
        message = (
            f"spec.traffic.provider: {exp.spec.traffic.provider.value} is not supported for experiments "
            "yet; use Router"
        )
        return await _invalid(kube, namespace, name, meta, status_before, message, now)

    # -- observe ----------------------------------------------------------------------------------
    targets = await observe_targets(kube, exp)
    rewards: dict[str, RewardCounts] | str | None = None
    guardrails: dict[str, list[GuardrailOutcome]] = {}
    if evaluation_due(exp, now) and all(t.usable for t in targets.values()):
        rewards, guardrails = await observe_metrics(exp, targets, now, config)
    observation = ExperimentObservation(
        targets=targets,
        rewards=rewards,
        guardrails=guardrails,
        action=exp.metadata.annotations.get(ACTION_ANNOTATION),
    )

    # -- plan -------------------------------------------------------------------------------------
    decided = plan(exp, observation, now)

    # -- apply ------------------------------------------------------------------------------------
    applied = 0

    if decided.weights is not None:
        owner = experiment_owner(name, namespace, meta.get("uid", ""))
        router = exp.spec.traffic.router
        sticky = exp.spec.traffic.stickiness or router.stickiness
        arms = [
            Arm(
                variant=v.name,
                model_deployment=v.model_deployment,
                revision=targets[v.name].revision or "",
                model=targets[v.name].model or "",
                weight=decided.weights[v.name],
            )
            for v in exp.spec.variants
        ]
        table = experiment_route_table(
            owner,
            arms,
            stickiness_header=sticky.header if sticky else None,
            stickiness_cookie=sticky.cookie if sticky else None,
            upstream_template=config.upstream_template,
        )
        applied += await ensure_signing_key(kube, owner, cache)
        for obj in experiment_router_objects(owner, router.image or config.serving_image, router.replicas):
            applied += await apply_cached(kube, obj, cache)
        applied += await apply_cached(kube, experiment_route_configmap(owner, table), cache)
    patch = merge_patch_for(status_before, _status_dict(decided))
    if patch:
        await _patch_experiment(kube, namespace, name, {"status": patch}, status=True)
    wrote = bool(patch) or decided.clear_action
    if decided.clear_action:
        await clear_action(kube, KIND, namespace, name)
    return Outcome(
        plan=decided,
        events=list(decided.events),
        requeue_after=decided.requeue_after,
        applied=applied,
        wrote=wrote,
    )


async def _invalid(
    kube: Kube, namespace: str, name: str, meta: Obj, status_before: Obj, message: str, now: datetime
) -> Outcome:
    """Bad input: name the field in the status and an event; touch no child."""
    patch = {"status": refused_status(status_before, meta.get("generation") or 0, message, now)}
    if status_before.get("message") != patch["status"]["message"]:
        try:
            await _patch_experiment(kube, namespace, name, patch, status=True)
        except KubeError as exc:
            log.warning("could not report the invalid spec of %s/%s: %s", namespace, name, exc)
        return Outcome(plan=None, events=[PlanEvent("Warning", "InvalidSpec", message)])
    return Outcome(plan=None)


# --- operator metrics ----------------------------------------------------------------------------

EXPERIMENT_PHASE = Gauge(
    "mlrollouts_experiment_phase",
    "1 for the current phase of an Experiment, 0 for the others",
    ["namespace", "name", "phase"],
    registry=metrics.REGISTRY,
)
EXPERIMENT_WEIGHT = Gauge(
    "mlrollouts_experiment_weight_percent",
    "Traffic weight of an Experiment's variant, percent",
    ["namespace", "name", "variant"],
    registry=metrics.REGISTRY,
)
EXPERIMENT_BEST = Gauge(
    "mlrollouts_experiment_probability_to_be_best",
    "Posterior probability that the variant is the best one, at the last evaluation",
    ["namespace", "name", "variant"],
    registry=metrics.REGISTRY,
)
EXPERIMENT_EVENTS = Counter(
    "mlrollouts_experiment_events",
    "Experiment events by reason (WeightChanged, GuardrailBreached, Concluded, ...)",
    ["namespace", "name", "reason"],
    registry=metrics.REGISTRY,
)


def _record(namespace: str, name: str, decided: ExperimentPlan) -> None:
    status = decided.status
    for phase in ExperimentPhase:
        EXPERIMENT_PHASE.labels(namespace, name, phase.value).set(1 if status.phase is phase else 0)
    _forget(namespace, name, (EXPERIMENT_WEIGHT, EXPERIMENT_BEST))
    for variant in status.variants:
        EXPERIMENT_WEIGHT.labels(namespace, name, variant.name).set(variant.weight)
        if variant.probability_to_be_best is not None:
            EXPERIMENT_BEST.labels(namespace, name, variant.name).set(variant.probability_to_be_best)
    for event in decided.events:
        EXPERIMENT_EVENTS.labels(namespace, name, event.reason).inc()


def _forget(namespace: str, name: str, gauges: tuple[Gauge, ...]) -> None:
    for gauge in gauges:
        for labels in list(gauge._metrics):
            if labels[:2] == (namespace, name):
                gauge.remove(*labels)


# --- kopf handlers -------------------------------------------------------------------------------


def _lock(memo: kopf.Memo) -> asyncio.Lock:
    lock = memo.get("experiment_lock")
    if lock is None:
        lock = memo.experiment_lock = asyncio.Lock()
    return lock


# A pass must not decide from a body older than its own last write: kopf hands handlers the body of
# the last watch event, which may not include the status just patched yet. Such a pass is skipped,
# for at most this long, until the watch catches up.
STALE_BODY_TIMEOUT = 10.0


def _progress_key(status: Obj) -> tuple[Any, ...]:
    """What identifies how far an experiment has got: the last evaluation, the phase, the end."""

    def instant(value: Any) -> datetime | None:
        if not value:
            return None
        try:
            parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        except ValueError:
            return None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)

    return (
        instant(status.get("startedAt")),
        instant(status.get("lastUpdateAt")),
        status.get("phase"),
        instant(status.get("concludedAt")),
    )


async def _pass(body: kopf.Body, memo: kopf.Memo) -> None:
    kube: Kube = memo.kube
    config: OperatorConfig = memo.config
    async with _lock(memo):
        seen = _progress_key(body.get("status") or {})
        written = memo.get("experiment_written")
        if written is not None and seen != written[0] and time.monotonic() < written[1]:
            return
        cache = memo.get("experiment_applied")
        if cache is None:
            cache = memo.experiment_applied = {}
        started = time.perf_counter()
        try:
            outcome = await reconcile_experiment(dict(body), kube, config, applied_cache=cache)
        except KubeError as exc:
            metrics.RECONCILE_ERRORS.labels("api").inc()
            cache.clear()  # unsure what was applied: send everything again next time
            raise kopf.TemporaryError(str(exc), delay=1 if exc.status == 409 else 5) from exc
        except Exception:
            metrics.RECONCILE_ERRORS.labels("internal").inc()
            raise
        finally:
            metrics.RECONCILE_SECONDS.observe(time.perf_counter() - started)
        if outcome.plan is not None:
            _record(body.metadata.namespace or "", body.metadata.name or "", outcome.plan)
        if outcome.wrote and outcome.plan is not None:
            key = _progress_key(_status_dict(outcome.plan))
            memo.experiment_written = (key, time.monotonic() + STALE_BODY_TIMEOUT)
        for event in outcome.events:
            log.info("%s/%s %s: %s", body.metadata.namespace, body.metadata.name, event.reason, event.message)
            kopf.event(body, type=event.type, reason=event.reason, message=event.message)
        memo.experiment_next_at = (
            time.monotonic() + outcome.requeue_after if outcome.requeue_after is not None else None
        )


async def changed(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    await _pass(body, memo)


async def drive(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    phase = (body.get("status") or {}).get("phase")
    if phase in {p.value for p in TERMINAL}:
        return
    next_at = memo.get("experiment_next_at")
    if next_at is not None and time.monotonic() < next_at:
        return
    await _pass(body, memo)


async def deleted(name: str, namespace: str | None, **_: Any) -> None:
    # children carry owner references: the garbage collector removes them
    _forget(namespace or "", name, (EXPERIMENT_PHASE, EXPERIMENT_WEIGHT, EXPERIMENT_BEST))


def register(registry: kopf.OperatorRegistry, tick: float = 1.0) -> kopf.OperatorRegistry:
    """Add the Experiment handlers to ``registry`` (which carries login/startup/cleanup)."""
    for decorator in (kopf.on.resume, kopf.on.create, kopf.on.update):
        decorator(GROUP, VERSION, PLURAL, registry=registry, backoff=2)(changed)
    kopf.timer(GROUP, VERSION, PLURAL, interval=tick, sharp=False, backoff=2, registry=registry)(drive)
    kopf.on.delete(GROUP, VERSION, PLURAL, optional=True, registry=registry)(deleted)
    return registry


def registry(tick: float = 1.0) -> kopf.OperatorRegistry:
    """A registry with only the Experiment controller (and the shared login/startup/cleanup)."""
    reg = kopf.OperatorRegistry()
    kopf.on.login(registry=reg)(handlers.login)
    kopf.on.startup(registry=reg)(handlers.startup)
    kopf.on.cleanup(registry=reg)(handlers.cleanup)
    return register(reg, tick)


def decode_signing_key(secret: Obj) -> str:
    """The signing key stored in the router Secret (for tools and tests)."""
    return base64.b64decode((secret.get("data") or {})[SIGNING_KEY_FIELD]).decode()


__all__ = [
    "Outcome",
    "decode_signing_key",
    "observe_metrics",
    "observe_targets",
    "reconcile_experiment",
    "register",
    "registry",
]
