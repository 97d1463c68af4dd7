"""The snapshot canary of ``spec.learning.promotion: Canary`` in the ModelDeployment pass.

Two long-lived serving Deployments of the stable model revision ``r`` serve snapshots: ``<name>-r``
(the stable snapshot, held by the learner's pin) and ``<name>-r-candidate`` (the candidate
snapshot, the learner's ``candidate`` pointer). Both hot-load; no pod is started per snapshot. The
router's route table splits the stable revision's traffic between them; the rollout of model
revisions sees that split folded back into ``r`` (:func:`fold_candidate_split`), so a snapshot
canary never looks like a model rollout.

observe: the candidate Deployment's readiness, the split the router confirms, the checks when due;
decide: :func:`mlrollouts.learning.canary.decide_canary` (pure); apply: the pin and the candidate
pointer through the learner, the route weights and the candidate Deployment with the rest.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from mlrollouts.analysis import AnalysisContext, run_checks
from mlrollouts.api import LearningStatus, ModelDeployment
from mlrollouts.api.modeldeployment import LearningPromotion
from mlrollouts.builders import Object, ServingRevision, serving_deployment, serving_service
from mlrollouts.controller import metrics
from mlrollouts.controller.config import OperatorConfig
from mlrollouts.core.events import Event
from mlrollouts.learning.canary import (
    CANDIDATE_SUFFIX,
    CanaryObservation,
    canary_analysis,
    canary_due,
    candidate_revision,
    decide_canary,
    with_canary,
)
from mlrollouts.learning.decide import LearningDecision
from mlrollouts.learning.report import LearnerReport
from mlrollouts.rollout import AnalysisRun, Decision, RevisionHealth
from mlrollouts.traffic import Readback
from mlrollouts.traffic.base import positive

Obj = dict[str, Any]


def snapshot_canary_on(md: ModelDeployment) -> bool:
    learning = md.spec.learning
    return learning is not None and learning.enabled and learning.promotion is LearningPromotion.CANARY


@dataclass(frozen=True)
class SnapshotTraffic:
    """The share of the stable revision's traffic the candidate-snapshot Deployment gets."""

    stable_revision: str
    weight: int = 0
    shadow: int | None = None


def fold_candidate_split(
    readback: Readback, stable_revision: str | None
) -> tuple[Readback, tuple[int, int] | None]:
    """The readback with the candidate-snapshot share counted as the stable revision's (what the
    rollout of model revisions must see), and the (stable, candidate) split it held."""

    def fold(weights: dict[str, int] | None) -> dict[str, int] | None:
        if weights is None:
            return None
        folded: dict[str, int] = {}
        for name, weight in weights.items():
            base = name.removesuffix(CANDIDATE_SUFFIX)
            folded[base] = folded.get(base, 0) + weight
        return folded

    confirmed = readback.confirmed
    split = None
    if confirmed is not None and stable_revision is not None:
        split = (confirmed.get(stable_revision, 0), confirmed.get(candidate_revision(stable_revision), 0))
    folded = dataclasses.replace(readback, confirmed=fold(confirmed), effective=fold(readback.effective))
    return folded, split


def route_weights(
    weights: dict[str, int], shadow: tuple[str, int] | None, traffic: SnapshotTraffic | None
) -> tuple[dict[str, int], tuple[str, int] | None]:
    """The route weights with the candidate snapshot's share split off the stable revision; as they
    are while a model rollout is in flight (snapshot canaries hold then)."""
    if traffic is None or (traffic.weight == 0 and not traffic.shadow):
        return weights, shadow
    stable = traffic.stable_revision
    if positive(weights) != {stable: 100} or shadow is not None:
        return weights, shadow
    candidate = candidate_revision(stable)
    split = {stable: 100 - traffic.weight, candidate: traffic.weight}
    return split, ((candidate, traffic.shadow) if traffic.shadow else None)


def candidate_objects(md: ModelDeployment, stable: ServingRevision) -> list[Object]:
    """The candidate-snapshot Deployment and Service of the stable revision."""
    assert md.spec.learning is not None
    revision = dataclasses.replace(
        stable,
        revision=candidate_revision(stable.revision),
        replicas=md.spec.learning.canary_or_default.replicas,
        extra_args=(*stable.extra_args, "--snapshot-pointer", "candidate"),
    )
    return [serving_deployment(revision), serving_service(stable.owner, revision.revision)]


def stale_candidates(deployments: dict[str | None, Obj], keep: str | None) -> list[str]:
    """Candidate-snapshot revisions of other stable revisions (or all, with ``keep`` None)."""
    return sorted(
        rev for rev in deployments if rev is not None and rev.endswith(CANDIDATE_SUFFIX) and rev != keep
    )


def canary_hold(md: ModelDeployment, rollout: Decision, status: LearningStatus) -> str | None:
    """Why no snapshot canary may run now, or None."""
    assert md.spec.learning is not None
    if rollout.state.candidate is not None:
        return f"the rollout of model revision {rollout.state.candidate} is in flight"
    if md.spec.learning.pinned_snapshot is not None:
        return "spec.learning.pinnedSnapshot holds serving"
    if status.breached_at_samples is not None:
        return "the guard is breached"
    return None


async def run_canary_analysis(
    md: ModelDeployment, stable_revision: str, now: datetime, config: OperatorConfig
) -> AnalysisRun:
    analysis = canary_analysis(md)
    assert analysis is not None
    context = AnalysisContext.from_spec(
        analysis,
        namespace=md.metadata.namespace or "",
        name=md.metadata.name or "",
        model=md.served_model_name,
        revision=candidate_revision(stable_revision),
        stable_revision=stable_revision,
        default_prometheus_address=config.prometheus_url,
    )
    if analysis.prometheus is None:
        context = dataclasses.replace(context, prometheus_timeout=config.prometheus_timeout)
    results = await run_checks(analysis.checks, context)
    for r in results:
        metrics.ANALYSIS.labels(md.metadata.namespace, md.metadata.name, r.name, r.verdict.value).inc()
    return AnalysisRun(now, tuple(results))


@dataclass(frozen=True)
class CanaryContext:
    """What the pass already knows when the snapshot canary decides."""

    rollout: Decision
    health: dict[str, RevisionHealth]
    split: tuple[int, int] | None
    now: datetime
    config: OperatorConfig


async def canary_step(
    md: ModelDeployment, report: LearnerReport, decision: LearningDecision, ctx: CanaryContext
) -> tuple[LearningDecision, SnapshotTraffic | None]:
    """Observe and decide the snapshot canary; the learning decision it changes and its traffic."""
    stable_revision = ctx.rollout.state.stable
    if stable_revision is None:
        return decision, None
    status = decision.status
    candidate_health = ctx.health.get(candidate_revision(stable_revision))
    stable_health = ctx.health.get(stable_revision)
    run = None
    if status.canary is not None and canary_due(md, status.canary, ctx.now):
        run = await run_canary_analysis(md, stable_revision, ctx.now, ctx.config)
    seen = CanaryObservation(
        stable_ready=stable_health is not None and stable_health.ready,
        candidate_ready=candidate_health is not None and candidate_health.ready,
        candidate_pointer=report.candidate,
        split=ctx.split,
        analysis=run,
        hold=canary_hold(md, ctx.rollout, status),
    )
    records = {r.version: r for r in status.snapshots}
    canary = decide_canary(
        md, status.canary, records, report.serving, seen, ctx.now, lineage_start=status.lineage_start
    )
    if canary is None:
        return decision, SnapshotTraffic(stable_revision)
    traffic = SnapshotTraffic(stable_revision, canary.weight, canary.shadow)
    return with_canary(decision, canary, report), traffic


def held_traffic(md: ModelDeployment, stable_revision: str | None) -> SnapshotTraffic | None:
    """The canary's traffic as the status last recorded it (the learner cannot be asked now)."""
    learning = md.status.learning if md.status else None
    canary = learning.canary if learning is not None else None
    if stable_revision is None or canary is None:
        return None
    return SnapshotTraffic(stable_revision, canary.weight, canary.shadow)


def candidate_event(problem: str | None, wanted: int | None) -> list[Event]:
    if problem is None:
        return []
    what = f"serve snapshot {wanted} as the candidate" if wanted is not None else "clear the candidate"
    return [Event.warning("CandidatePointerFailed", f"cannot {what}: {problem}")]
