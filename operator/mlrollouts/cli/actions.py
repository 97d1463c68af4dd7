"""When a manual action has an effect, read from a ModelDeployment as the API returns it (pure).

The plugin checks these rules before it writes ``mlrollouts.io/action``, so a request that would do
nothing is refused on the terminal instead of becoming an ``ActionIgnored`` event nobody reads. They
follow the operator's own rules (``mlrollouts.rollout.machine``), which still ignore, with an event,
an annotation written by other means.
"""

from __future__ import annotations

import os
import sys
from typing import Any

Object = dict[str, Any]

PROMOTE, PROMOTE_FULL, ABORT, RETRY, RESUME = "promote", "promote-full", "abort", "retry", "resume"
PAUSED_BY_SPEC = "PausedBySpec"
AWAITING_APPROVAL = "AwaitingApproval"


def command_prefix(argv0: str | None = None) -> str:
    """How the user typed the program: ``kubectl mlrollouts`` when kubectl ran the plugin binary."""
    name = os.path.basename(sys.argv[0] if argv0 is None else argv0)
    return "kubectl mlrollouts" if name.startswith("kubectl-") else "mlrollouts"


def phase_of(obj: Object) -> str:
    return (obj.get("status") or {}).get("phase") or "Pending"


def pause_reason(obj: Object) -> str | None:
    """Why the operator holds a Paused rollout: the reason of its ``Progressing`` condition."""
    status = obj.get("status") or {}
    if status.get("phase") != "Paused":
        return None
    progressing: Object = next(
        (c for c in status.get("conditions") or [] if c.get("type") == "Progressing"), {}
    )
    return progressing.get("reason")


def spec_paused(obj: Object) -> bool:
    return bool(((obj.get("spec") or {}).get("rollout") or {}).get("paused"))


def step_count(spec: Object) -> int:
    """The steps the strategy runs: blue/green keeps only shadow and approval steps, Immediate none."""
    rollout = spec.get("rollout") or {}
    steps = rollout.get("steps") or []
    strategy = rollout.get("strategy") or "Canary"
    if strategy == "Immediate":
        return 0
    if strategy == "BlueGreen":
        return sum(1 for s in steps if s.get("weight") is None)
    return len(steps)


def refusal(action: str, obj: Object, prefix: str = "mlrollouts") -> str | None:
    """Why ``action`` would have no effect now (``None``: it applies)."""
    status = obj.get("status") or {}
    phase = phase_of(obj)
    name = (obj.get("metadata") or {}).get("name")
    if action == RETRY:
        if phase == "Degraded" and status.get("failedRevision") and not status.get("candidateRevision"):
            return None
        return f"there is no rolled-back revision to retry (phase {phase})"
    if not status.get("candidateRevision"):
        return f"no rollout is in progress (phase {phase})"
    if action == ABORT:
        return None
    if pause_reason(obj) == PAUSED_BY_SPEC:
        return (
            f"the rollout is paused by spec.rollout.paused; `{prefix} resume {name}` clears it "
            "(or set it to false where the manifest lives)"
        )
    if action == RESUME:
        return None if phase == "Paused" else f"the rollout is not paused (phase {phase})"
    current = status.get("currentStep")
    if isinstance(current, int) and current >= step_count(obj.get("spec") or {}):
        return f"revision {status['candidateRevision']} is already being promoted to 100 %"
    return None


def operator_hold(obj: Object) -> bool:
    """Paused by the operator itself (an approval step, inconclusive analysis), not by the spec."""
    return pause_reason(obj) not in (None, PAUSED_BY_SPEC)


def resume_refusal(obj: Object) -> str | None:
    """Why ``resume`` would change nothing now: neither the spec nor the operator holds the rollout."""
    if spec_paused(obj) or operator_hold(obj):
        return None
    return f"nothing to resume: the rollout is not paused (phase {phase_of(obj)})"


def pause_refusal(obj: Object) -> str | None:
    """Why ``pause`` would change nothing now (``None``: it holds a rollout in progress)."""
    if spec_paused(obj):
        return "already paused (spec.rollout.paused is true)"
    if not (obj.get("status") or {}).get("candidateRevision"):
        return (
            f"no rollout is in progress (phase {phase_of(obj)}); to hold the next rollout at its start, "
            "apply it with spec.rollout.paused: true"
        )
    return None
