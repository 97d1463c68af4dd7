"""Why a revision is not ready, from what the kubelet reports of its pods (pure).

A Deployment only counts ready replicas; the reason a replica is not ready lives in its pod's
``status.containerStatuses``: the state the container waits in (``CrashLoopBackOff``,
``ContainerCreating`` with a message), its ``restartCount``, and the exit code and termination
message of its last run (with ``terminationMessagePolicy: FallbackToLogsOnError`` the tail of its
log). A model server that ends on purpose writes a one-line JSON report there
(``{"reason": ..., "message": ...}``, see ``mlserving.runtimes.refusals``); its reason and message
are the most precise words there are, so they come first.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from mlrollouts.core.termination import termination_report

MAX_MESSAGE = 400
"""Characters of a container's last words kept in a status message."""
NOT_READY = "NotReady"


@dataclass(frozen=True)
class PodTrouble:
    """Why one container of a revision is not ready: a reason (one word) and a message."""

    reason: str
    message: str
    rank: int = 0
    """How telling it is: a report beats an exit, an exit beats a wait, a wait beats "not ready"."""


def pods_trouble(pods: Iterable[Mapping[str, Any]]) -> PodTrouble | None:
    """The most telling reason any of ``pods`` (one revision's) is not ready; ``None`` when all are."""
    found: PodTrouble | None = None
    for pod in pods:
        if (pod.get("metadata") or {}).get("deletionTimestamp"):
            continue
        status = pod.get("status") or {}
        for container in status.get("containerStatuses") or []:
            trouble = _container_trouble(container)
            if trouble is not None and (found is None or trouble.rank > found.rank):
                found = trouble
        pending = _pending_trouble(status)
        if found is None and pending is not None:
            found = pending
    return found


def _container_trouble(container: Mapping[str, Any]) -> PodTrouble | None:
    if container.get("ready"):
        return None
    name = container.get("name") or "?"
    state = container.get("state") or {}
    waiting = state.get("waiting") or {}
    terminated = state.get("terminated") or (container.get("lastState") or {}).get("terminated") or {}
    restarts = int(container.get("restartCount") or 0)
    facts = [f"container {name}"]
    if waiting.get("reason"):
        facts.append(str(waiting["reason"]))
    elif "running" in state:
        facts.append("running, not ready")
    if restarts:
        facts.append(f"{restarts} restart{'s' if restarts != 1 else ''}")
    if terminated.get("exitCode") is not None:
        facts.append(f"last exit code {terminated['exitCode']}")
    where = ", ".join(facts)
    words = str(terminated.get("message") or "")
    report = termination_report(words)
    if report is not None:
        reason, message = report["reason"], str(report.get("message") or "")
        return PodTrouble(reason, f"{reason}: {_short(message)} ({where})", rank=3)
    # the state it is in now names it; a container running again is just not ready (yet)
    reason = str(waiting.get("reason") or (state.get("terminated") or {}).get("reason") or NOT_READY)
    last = _last_line(words)
    if last:
        return PodTrouble(reason, f"{where}: {_short(last)}", rank=2)
    if waiting.get("message") and not terminated:
        return PodTrouble(reason, f"{where}: {_short(str(waiting['message']))}", rank=1)
    return PodTrouble(reason, where, rank=0 if reason == NOT_READY else 1)


def _pending_trouble(status: Mapping[str, Any]) -> PodTrouble | None:
    """A pod without container statuses that says why (a volume or a Secret it waits for)."""
    if status.get("containerStatuses"):
        return None
    for cond in status.get("conditions") or []:
        if cond.get("type") == "Ready" and cond.get("status") != "True" and cond.get("message"):
            return PodTrouble(str(cond.get("reason") or "PodNotReady"), _short(str(cond["message"])))
    if status.get("message"):
        return PodTrouble(str(status.get("reason") or "PodNotReady"), _short(str(status["message"])))
    return None


def _last_line(words: str) -> str:
    lines = [line.strip() for line in words.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


def _short(text: str) -> str:
    return text if len(text) <= MAX_MESSAGE else text[: MAX_MESSAGE - 1] + "…"
