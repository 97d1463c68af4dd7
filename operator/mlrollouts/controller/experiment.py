"""The Experiment controller: observe -> plan -> apply of one experiment pass.

- observe: the ModelDeployments behind the variants (their stable revision and served model name,
  read from their status; their specs are never written), and when an evaluation is due, the
  per-variant rewards (router feedback metrics or the spec's query) and guardrails from Prometheus;
- plan: :func:`mlrollouts.experiment.plan.plan` (pure, time as an argument);
- apply: the router objects, the signing-key Secret (created once) and the route table ConfigMap
  with the planned weights; the status comes back in the :class:`Outcome`.

An evaluation is due at ``status.lastUpdateAt + spec.interval``, so a restarted operator resumes
from the status.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

from mlrollouts.analysis import AnalysisContext, QueryError, prometheus_provider, read_rewards, run_checks
from mlrollouts.api import EXPERIMENT, MODEL_DEPLOYMENT
from mlrollouts.api.experiment import (
    Experiment,
    ExperimentPhase,
    ExperimentTrafficProvider,
    RewardDistribution,
    RewardSource,
)
from mlrollouts.builders.experiment import Arm, experiment_owner, experiment_route_table
from mlrollouts.builders.router import route_configmap, router_objects
from mlrollouts.controller import metrics
from mlrollouts.controller.config import OperatorConfig
from mlrollouts.controller.resource import KindController, Outcome, Pass, Refused, parse_instant
from mlrollouts.core.durations import parse_duration
from mlrollouts.core.names import ACTION_ANNOTATION
from mlrollouts.core.times import aware
from mlrollouts.experiment.plan import (
    ExperimentObservation,
    ExperimentPlan,
    GuardrailOutcome,
    RewardCounts,
    VariantTarget,
    evaluation_due,
    plan,
)

Obj = dict[str, Any]


def target_of(variant: str, md_name: str, md: Obj | None) -> VariantTarget:
    """A variant's serving target from its ModelDeployment, or why it has none yet."""
    if md is None:
        return VariantTarget(variant, md_name, problem=f"ModelDeployment {md_name!r} not found")
    model = ((md.get("spec") or {}).get("model") or {}).get("name") or md_name
    revision = (md.get("status") or {}).get("stableRevision")
    if not revision:
        return VariantTarget(
            variant, md_name, model=model, problem=f"ModelDeployment {md_name!r} has no stable revision yet"
        )
    return VariantTarget(variant, md_name, model=model, revision=revision)


async def observe_targets(kube: Any, exp: Experiment) -> dict[str, VariantTarget]:
    """Each variant's serving target, from its ModelDeployment's status (read only)."""
    namespace = exp.metadata.namespace or ""
    names = sorted({v.model_deployment for v in exp.spec.variants})
    api_version, kind = MODEL_DEPLOYMENT.api_version, MODEL_DEPLOYMENT.kind
    found = await asyncio.gather(*(kube.get(api_version, kind, namespace, n) for n in names))
    by_name = dict(zip(names, found, strict=True))
    return {
        v.name: target_of(v.name, v.model_deployment, by_name[v.model_deployment]) for v in exp.spec.variants
    }


def _started(exp: Experiment) -> float:
    started = aware(exp.status.started_at if exp.status is not None else None)
    assert started is not None
    return started.timestamp()


async def observe_rewards(exp: Experiment, provider: Any, at: float) -> dict[str, RewardCounts] | str:
    """Rewards of every variant since the start, or why they could not be read."""
    spec = exp.spec
    wait = parse_duration(spec.reward.reward_wait)
    rewards = await read_rewards(
        provider,
        route=exp.metadata.name or "",
        variants=[v.name for v in spec.variants],
        since=_started(exp),
        now=at,
        reward_query=spec.reward.query if spec.reward.source is RewardSource.QUERY else None,
        variables={"namespace": exp.metadata.namespace or "", "name": exp.metadata.name or ""},
        reward_wait=wait if wait > 0 else None,
        # Gaussian rewards from a custom query are refused by the plan (no sum of squares).
        gaussian=spec.reward.distribution is RewardDistribution.GAUSSIAN
        and spec.reward.source is RewardSource.FEEDBACK,
    )
    if isinstance(rewards, QueryError):
        return rewards.reason
    return {
        k: RewardCounts(r.requests, r.feedback, r.reward_sum, r.reward_sum_squares or 0.0)
        for k, r in rewards.items()
    }


async def observe_guardrails(
    exp: Experiment, targets: dict[str, VariantTarget], provider: Any, at: float
) -> dict[str, list[GuardrailOutcome]]:
    """Each variant's guardrail checks; a variant already breached is not checked again."""
    spec, status = exp.spec, exp.status
    already = {v.name for v in (status.variants if status else []) if v.guardrail.value == "Breached"}

    async def of(variant: str) -> list[GuardrailOutcome]:
        target = targets[variant]
        if not spec.guardrails or variant in already:
            return []
        context = AnalysisContext(
            namespace=exp.metadata.namespace or "",
            name=exp.metadata.name or "",
            model=target.model or "",
            revision=target.revision or "",
            variant=variant,
            interval=spec.interval,
            provider=provider,
        )
        results = await run_checks(spec.guardrails, context, at=at)
        return [GuardrailOutcome(r.name, r.verdict, r.message, r.value) for r in results]

    names = [v.name for v in spec.variants]
    return dict(zip(names, await asyncio.gather(*(of(n) for n in names)), strict=True))


async def observe_metrics(
    exp: Experiment, targets: dict[str, VariantTarget], now: datetime, config: OperatorConfig
) -> tuple[dict[str, RewardCounts] | str, dict[str, list[GuardrailOutcome]]]:
    """Rewards since the start and each variant's guardrails, evaluated at ``now``."""
    spec = exp.spec
    address = (spec.prometheus.address if spec.prometheus else None) or config.prometheus_url
    if not address:
        return "no Prometheus address: set spec.prometheus.address or the operator's --prometheus-url", {}
    timeout = parse_duration(spec.prometheus.timeout) if spec.prometheus else config.prometheus_timeout
    try:
        provider = prometheus_provider(address, timeout)
    except ValueError as exc:
        return f"spec.prometheus: {exc}", {}
    at = now.timestamp()
    return await asyncio.gather(
        observe_rewards(exp, provider, at), observe_guardrails(exp, targets, provider, at)
    )


async def apply_route(
    exp: Experiment, targets: dict[str, VariantTarget], weights: dict[str, int], ctx: Pass
) -> None:
    """The router, its signing key and the route table with the planned weights."""
    meta = exp.metadata
    owner = experiment_owner(meta.name or "", meta.namespace or "", meta.uid or "")
    router = exp.spec.traffic.router
    sticky = exp.spec.traffic.stickiness or router.stickiness
    arms = [
        Arm(
            variant=v.name,
            model_deployment=v.model_deployment,
            revision=targets[v.name].revision or "",
            model=targets[v.name].model or "",
            weight=weights[v.name],
        )
        for v in exp.spec.variants
    ]
    table = experiment_route_table(
        owner,
        arms,
        stickiness_header=sticky.header if sticky else None,
        stickiness_cookie=sticky.cookie if sticky else None,
        upstream_template=ctx.config.upstream_template,
    )
    await ctx.children.ensure_signing_key(owner)
    for obj in router_objects(owner, router.image or ctx.config.serving_image, router.replicas):
        await ctx.children.apply(obj)
    await ctx.children.apply(route_configmap(owner, table))


class ExperimentController(KindController):
    kind = EXPERIMENT

    async def reconcile(self, resource: Any, ctx: Pass) -> Outcome:
        exp: Experiment = resource
        if exp.spec.traffic.provider is not ExperimentTrafficProvider.ROUTER:
            raise Refused(
                f"spec.traffic.provider: {exp.spec.traffic.provider.value} is not supported for "
                "experiments yet; use Router"
            )
        targets = await observe_targets(ctx.kube, exp)
        rewards: dict[str, RewardCounts] | str | None = None
        guardrails: dict[str, list[GuardrailOutcome]] = {}
        if evaluation_due(exp, ctx.now) and all(t.usable for t in targets.values()):
            rewards, guardrails = await observe_metrics(exp, targets, ctx.now, ctx.config)
        observation = ExperimentObservation(
            targets=targets,
            rewards=rewards,
            guardrails=guardrails,
            action=exp.metadata.annotations.get(ACTION_ANNOTATION),
        )
        decided = plan(exp, observation, ctx.now)
        if decided.weights is not None:
            await apply_route(exp, targets, decided.weights, ctx)
        return Outcome(
            status=decided.status.model_dump(mode="json", by_alias=True, exclude_none=True),
            events=decided.events,
            requeue_after=decided.requeue_after,
            clear_action=decided.clear_action,
            decision=decided,
        )

    def progress_key(self, status: Obj) -> Any:
        """How far the experiment has got: the last evaluation, the phase, the end."""
        return (
            parse_instant(status.get("startedAt")),
            parse_instant(status.get("lastUpdateAt")),
            status.get("phase"),
            parse_instant(status.get("concludedAt")),
        )

    def record(self, namespace: str, name: str, outcome: Outcome) -> None:
        decided: ExperimentPlan | None = outcome.decision
        if decided is not None:
            status = decided.status
            phases = [p.value for p in ExperimentPhase]
            metrics.set_phase(metrics.EXPERIMENT_PHASE, namespace, name, phases, status.phase.value)
            metrics.set_values(
                metrics.EXPERIMENT_WEIGHT, namespace, name, {v.name: v.weight for v in status.variants}
            )
            best = {
                v.name: v.probability_to_be_best
                for v in status.variants
                if v.probability_to_be_best is not None
            }
            metrics.set_values(metrics.EXPERIMENT_BEST, namespace, name, best)
        for event in outcome.events:
            metrics.EXPERIMENT_EVENTS.labels(namespace, name, event.reason).inc()

    def forget(self, namespace: str, name: str) -> None:
        gauges = (metrics.EXPERIMENT_PHASE, metrics.EXPERIMENT_WEIGHT, metrics.EXPERIMENT_BEST)
        metrics.forget(namespace, name, gauges)
