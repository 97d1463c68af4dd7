"""What a serving container said when it ended (pure): the refusals a model server reports.

A model server that refuses its model for good (a skops file with types nobody trusted) exits with
a one-line JSON report as its termination message (``mlserving.runtimes.refusals``); the kubelet
keeps it in the pod's ``status.containerStatuses[].lastState.terminated.message`` (or
``state.terminated`` until the restart). The operator reads it from the pods of a revision that is
not ready, so the resource says why at once instead of timing out at the progress deadline.

A server whose model cannot be fetched (``ModelFetchFailed``) or fetched but not loaded
(``ModelLoadFailed``: a corrupt file, another format, no ``predict``) ends the same way; those
reports carry only a reason and a message, which ``termination_report`` reads and
``mlrollouts.rollout.pods`` puts first, so they need no constant here.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

UNTRUSTED_MODEL_TYPES = "UntrustedModelTypes"
"""The report's reason and the Degraded reason (``mlserving.runtimes.refusals`` writes the same)."""
TRUSTED_TYPES_FIELD = "spec.model.trustedTypes"


@dataclass(frozen=True)
class UntrustedTypes:
    """The types a revision's model file holds that nobody trusted."""

    types: tuple[str, ...]

    def message(self, trusted: Iterable[str]) -> str:
        listed = ", ".join(sorted(trusted)) or "none"
        return (
            f"{TRUSTED_TYPES_FIELD}: the model file holds types that skops does not trust by default: "
            f"{', '.join(self.types)}; review them and add them to {TRUSTED_TYPES_FIELD} "
            f"(trusted now: {listed}), or serve the model as ONNX"
        )


def untrusted_types(pods: Iterable[Mapping[str, Any]]) -> UntrustedTypes | None:
    """The untrusted types any of ``pods`` reported on exiting; ``None`` when none did."""
    for pod in pods:
        for status in (pod.get("status") or {}).get("containerStatuses") or []:
            for state in (status.get("state"), status.get("lastState")):
                message = ((state or {}).get("terminated") or {}).get("message") or ""
                found = _report(message)
                if found is not None:
                    return found
    return None


def termination_report(message: str) -> dict[str, Any] | None:
    """The JSON report in a termination message (the whole message, or its last JSON line when the
    kubelet kept a log tail): an object with a non-empty string ``reason``; ``None`` without one."""
    for line in reversed(message.strip().splitlines()):
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            report = json.loads(line)
        except ValueError:
            continue
        if isinstance(report, dict) and isinstance(report.get("reason"), str) and report["reason"]:
            return report
    return None


def _report(message: str) -> UntrustedTypes | None:
    report = termination_report(message)
    if report is None or report["reason"] != UNTRUSTED_MODEL_TYPES:
        return None
    types = report.get("untrustedTypes")
    if isinstance(types, list) and types and all(isinstance(t, str) for t in types):
        return UntrustedTypes(tuple(types))
    return None
