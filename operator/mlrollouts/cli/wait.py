"""When `status` stops waiting, and the one line it prints while it waits (pure: objects in, text out).

Like ``kubectl argo rollouts status``: a resource is done when the operator has seen its latest
generation and its phase is final, either a success (exit 0) or ``Degraded`` (exit 1).
"""

from __future__ import annotations

from typing import Any

Object = dict[str, Any]

EXIT_SUCCESS = 0
EXIT_DEGRADED = 1
EXIT_TIMEOUT = 124
"""As GNU ``timeout`` reports it, so a pipeline can tell "took too long" from "failed"."""
EXIT_INTERRUPTED = 130

SUCCESS_PHASES: dict[str, frozenset[str]] = {
    "ModelDeployment": frozenset({"Healthy"}),
    # an experiment that runs is doing what it was asked; it may never conclude on its own
    "Experiment": frozenset({"Running", "Concluded", "Stopped"}),
    "CompositeModel": frozenset({"Ready"}),
}
FAILURE_PHASE = "Degraded"


def behind(obj: Object) -> int | None:
    """The generation the operator has not seen yet, or ``None`` when its status is current."""
    generation = (obj.get("metadata") or {}).get("generation")
    observed = (obj.get("status") or {}).get("observedGeneration")
    if generation is None or (observed is not None and observed >= generation):
        return None
    return int(generation)


def settled(obj: Object) -> bool | None:
    """``True``: done and good; ``False``: Degraded; ``None``: still on its way."""
    if behind(obj) is not None:
        return None
    phase = (obj.get("status") or {}).get("phase") or "Pending"
    if phase == FAILURE_PHASE:
        return False
    return True if phase in SUCCESS_PHASES.get(obj.get("kind") or "", frozenset()) else None


def exit_code(obj: Object) -> int:
    """The exit status of a look that does not wait: only Degraded is a failure."""
    return EXIT_DEGRADED if settled(obj) is False else EXIT_SUCCESS


def progress_line(obj: Object, step: str | None = None) -> str:
    """``Phase - step - message``: what changed since the last line, in one line."""
    status = obj.get("status") or {}
    phase = status.get("phase") or "Pending"
    pending = behind(obj)
    if pending is not None:
        return f"{phase} - waiting for the operator to observe generation {pending}"
    parts = [phase]
    if step and step != "-":
        parts.append(f"step {step}")
    if status.get("message"):
        parts.append(str(status["message"]))
    return " - ".join(parts)
