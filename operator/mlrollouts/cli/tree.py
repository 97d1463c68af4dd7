"""`get NAME` of a ModelDeployment: its revisions, each with its Deployment and pods, as a tree
(what ``kubectl argo rollouts get rollout`` shows for a Rollout). Pure: objects and a time in, rows out.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from mlrollouts.cli.plugin import age
from mlrollouts.core.names import REVISION_LABEL

Object = dict[str, Any]
HEADER = ["NAME", "KIND", "STATUS", "AGE", "INFO"]
WAITING_REASONS_FIRST = ("CrashLoopBackOff", "ImagePullBackOff", "ErrImagePull", "CreateContainerConfigError")


def _revision_of(obj: Object) -> str | None:
    return ((obj.get("metadata") or {}).get("labels") or {}).get(REVISION_LABEL)


def revision_order(status: Object, deployments: Sequence[Object]) -> list[str]:
    """Candidate first, then stable, then the others newest first (as recorded), then any revision
    that has a Deployment but no record."""
    records = [r.get("revision") for r in status.get("revisions") or [] if r.get("revision")]
    seen = [status.get("candidateRevision"), status.get("stableRevision"), *reversed(records)]
    seen += [_revision_of(d) for d in deployments]
    return [rev for rev in dict.fromkeys(seen) if rev]


def revision_info(status: Object, revision: str) -> tuple[str, str]:
    """(status, info) of a revision: its role or outcome, and its traffic and model version."""
    record: Object = next((r for r in status.get("revisions") or [] if r.get("revision") == revision), {})
    if revision == status.get("candidateRevision"):
        role = "Candidate"
    elif revision == status.get("stableRevision"):
        role = "Stable"
    else:
        role = record.get("outcome") or "Retired"
    weight: Object = next((w for w in status.get("weights") or [] if w.get("revision") == revision), {})
    info = [f"weight {weight.get('desired', 0)}%"]
    if weight.get("verified") is not None and weight.get("verified") != weight.get("desired"):
        info[0] += f" (verified {weight['verified']}%)"
    if weight.get("shadow"):
        info.append(f"shadow {weight['shadow']}%")
    if record.get("modelVersion"):
        info.append(f"model {record['modelVersion']}")
    return role, ", ".join(info)


def deployment_state(deployment: Object) -> tuple[str, str]:
    wanted = (deployment.get("spec") or {}).get("replicas", 1)
    ready = (deployment.get("status") or {}).get("readyReplicas") or 0
    if wanted == 0:
        state = "ScaledDown"
    elif ready >= wanted:
        state = "Ready"
    else:
        state = "Progressing"
    return state, f"{ready}/{wanted} ready"


def pod_state(pod: Object) -> tuple[str, str]:
    status = pod.get("status") or {}
    containers = status.get("containerStatuses") or []
    ready = sum(1 for c in containers if c.get("ready"))
    restarts = sum(int(c.get("restartCount") or 0) for c in containers)
    waiting = [((c.get("state") or {}).get("waiting") or {}).get("reason") for c in containers]
    reasons = [r for r in waiting if r]
    if (pod.get("metadata") or {}).get("deletionTimestamp"):
        state = "Terminating"
    elif reasons:
        state = next((r for r in WAITING_REASONS_FIRST if r in reasons), reasons[0])
    else:
        state = status.get("phase") or "Pending"
    total = len(containers) or len((pod.get("spec") or {}).get("containers") or [])
    return state, f"ready {ready}/{total}, restarts {restarts}"


def tree_rows(
    obj: Object, deployments: Sequence[Object], pods: Sequence[Object], now: datetime
) -> list[list[Any]]:
    """The ModelDeployment, then per revision its Deployment(s) and their pods."""
    meta, status = obj.get("metadata") or {}, obj.get("status") or {}
    rows: list[list[Any]] = [
        [
            meta.get("name"),
            "ModelDeployment",
            status.get("phase") or "Pending",
            age(meta.get("creationTimestamp"), now),
            status.get("message"),
        ]
    ]
    revisions = revision_order(status, deployments)
    for index, revision in enumerate(revisions):
        last = index == len(revisions) - 1
        branch, below = ("└─ ", "   ") if last else ("├─ ", "│  ")
        record: Object = next((r for r in status.get("revisions") or [] if r.get("revision") == revision), {})
        role, info = revision_info(status, revision)
        rows.append(
            [f"{branch}revision {revision}", "Revision", role, age(record.get("createdAt"), now), info]
        )
        owned = [d for d in deployments if _revision_of(d) == revision]
        for d_index, deployment in enumerate(owned):
            d_last = d_index == len(owned) - 1
            d_branch, d_below = ("└─ ", "   ") if d_last else ("├─ ", "│  ")
            state, d_info = deployment_state(deployment)
            d_meta = deployment.get("metadata") or {}
            rows.append(
                [
                    f"{below}{d_branch}{d_meta.get('name')}",
                    "Deployment",
                    state,
                    age(d_meta.get("creationTimestamp"), now),
                    d_info,
                ]
            )
            mine = sorted(
                (p for p in pods if _revision_of(p) == revision),
                key=lambda p: (p.get("metadata") or {}).get("name") or "",
            )
            for p_index, pod in enumerate(mine):
                p_branch = "└─ " if p_index == len(mine) - 1 else "├─ "
                p_state, p_info = pod_state(pod)
                p_meta = pod.get("metadata") or {}
                rows.append(
                    [
                        f"{below}{d_below}{p_branch}{p_meta.get('name')}",
                        "Pod",
                        p_state,
                        age(p_meta.get("creationTimestamp"), now),
                        p_info,
                    ]
                )
    return rows
