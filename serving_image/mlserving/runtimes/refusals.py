"""Refusals no retry can change, reported where the control plane can read them.

A model file holding types nobody has trusted is refused the same way on every start; a server
that stayed up "not ready" would only time out a rollout. When the pod asks for it
(``MLSERVING_EXIT_ON_REFUSED_MODEL=true``, set by the operator), the server writes a one-line JSON
report to the container's termination message file (and as its last log line, which
``terminationMessagePolicy: FallbackToLogsOnError`` uses when the file is absent) and exits with
``REFUSED_EXIT_CODE``. The report is the contract with the operator::

    {"reason": "UntrustedModelTypes", "untrustedTypes": ["sklearn.tree._tree.Tree"], "message": "..."}

A model that cannot be fetched (``mlserving.storage.FetchError``: an HTTP error status, a stalled or
endless download) ends the container the same way, with reason ``ModelFetchFailed`` and exit code
``FETCH_FAILED_EXIT_CODE``: the server never fetches again by itself, so staying up "not ready"
would hide the cause, while a restart by the kubelet (with its back-off) is the retry.

This module imports nothing heavy: the operator reads the same constants.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

UNTRUSTED_MODEL_TYPES = "UntrustedModelTypes"
MODEL_FETCH_FAILED = "ModelFetchFailed"
EXIT_ENV = "MLSERVING_EXIT_ON_REFUSED_MODEL"
TERMINATION_MESSAGE_PATH = Path("/dev/termination-log")
REFUSED_EXIT_CODE = 3
FETCH_FAILED_EXIT_CODE = 4
MAX_TERMINATION_MESSAGE = 4096
"""Kubernetes keeps at most 4096 bytes of a termination message."""


class UntrustedTypesError(RuntimeError):
    """A skops file holds types that are neither trusted by skops nor listed as trusted."""

    def __init__(self, message: str, types: Sequence[str]) -> None:
        super().__init__(message)
        self.types = tuple(types)


def refusal_report(exc: UntrustedTypesError) -> str:
    """The JSON line the operator reads; the message is shortened so the line stays whole."""
    report = {"reason": UNTRUSTED_MODEL_TYPES, "untrustedTypes": list(exc.types), "message": ""}
    room = MAX_TERMINATION_MESSAGE - len(json.dumps(report)) - 8
    report["message"] = str(exc)[: max(room, 0)]
    return json.dumps(report)


def fetch_failure_report(exc: BaseException) -> str:
    """The JSON line of a model that could not be fetched (the message names the URI and why)."""
    report = {"reason": MODEL_FETCH_FAILED, "message": ""}
    room = MAX_TERMINATION_MESSAGE - len(json.dumps(report)) - 8
    report["message"] = str(exc)[: max(room, 0)]
    return json.dumps(report)


def exit_if_refused_for_good(
    exc: BaseException, env: Mapping[str, str] | None = None, path: Path = TERMINATION_MESSAGE_PATH
) -> None:
    """Report and exit when ``exc`` is a refusal or a failed fetch and the pod asked for it; else return."""
    from mlserving.storage import FetchError

    env = os.environ if env is None else env
    if env.get(EXIT_ENV, "").lower() != "true":
        return
    if isinstance(exc, UntrustedTypesError):
        report, code = refusal_report(exc), REFUSED_EXIT_CODE
    elif isinstance(exc, FetchError):
        report, code = fetch_failure_report(exc), FETCH_FAILED_EXIT_CODE
    else:
        return
    # Kubernetes mounts an empty file there; on a machine without one, nothing is created in /dev
    if path.is_file():
        try:
            path.write_text(report)
        except OSError:
            pass
    print(report, file=sys.stderr, flush=True)
    sys.stdout.flush()
    os._exit(code)
