"""Failures no retry by the server can change, reported where the control plane can read them.

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

A model that was fetched but fails to load for any other reason (a corrupt or truncated skops or
ONNX file, a file of another format, a refused pickle, an object without ``predict``, a compiler
process that failed or timed out) ends it with reason ``ModelLoadFailed`` and exit code
``LOAD_FAILED_EXIT_CODE``; the message names the model URI and the error. Only exceptions
(``Exception``) are reported: a cancelled load (the server stopping) and ``KeyboardInterrupt`` or
``SystemExit`` are not failures of the model.

The report is at most ``MAX_TERMINATION_MESSAGE`` bytes (its message is shortened). It is written to
``/dev/termination-log``, or to ``MLSERVING_TERMINATION_MESSAGE_PATH`` when set (for a container whose
``terminationMessagePath`` is elsewhere); a path that is not an existing file is left alone.

This module imports nothing heavy: the operator reads the same constants.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

UNTRUSTED_MODEL_TYPES = "UntrustedModelTypes"
MODEL_FETCH_FAILED = "ModelFetchFailed"
MODEL_LOAD_FAILED = "ModelLoadFailed"
EXIT_ENV = "MLSERVING_EXIT_ON_REFUSED_MODEL"
TERMINATION_PATH_ENV = "MLSERVING_TERMINATION_MESSAGE_PATH"
TERMINATION_MESSAGE_PATH = Path("/dev/termination-log")
REFUSED_EXIT_CODE = 3
FETCH_FAILED_EXIT_CODE = 4
LOAD_FAILED_EXIT_CODE = 5
MAX_TERMINATION_MESSAGE = 4096
"""Kubernetes keeps at most 4096 bytes of a termination message."""


class UntrustedTypesError(RuntimeError):
    """A skops file holds types that are neither trusted by skops nor listed as trusted."""

    def __init__(self, message: str, types: Sequence[str]) -> None:
        super().__init__(message)
        self.types = tuple(types)


def refusal_report(exc: UntrustedTypesError) -> str:
    """The JSON line the operator reads; the message is shortened so the line stays whole."""
    return _report_line({"reason": UNTRUSTED_MODEL_TYPES, "untrustedTypes": list(exc.types)}, str(exc))


def fetch_failure_report(exc: BaseException) -> str:
    """The JSON line of a model that could not be fetched (the message names the URI and why)."""
    return _report_line({"reason": MODEL_FETCH_FAILED}, str(exc))


def load_failure_report(exc: BaseException, model: str = "") -> str:
    """The JSON line of a model that was fetched but could not be loaded: ``load failed: <model>:
    <error>`` (the error's type is named unless it is a ``ModelLoadError``, whose words say it)."""
    from mlserving.runtimes.base import ModelLoadError

    error = str(exc) if isinstance(exc, ModelLoadError) and str(exc) else f"{type(exc).__name__}: {exc}"
    return _report_line({"reason": MODEL_LOAD_FAILED}, f"load failed: {model}: {error}" if model else error)


def _report_line(fields: Mapping[str, Any], message: str) -> str:
    """``fields`` and ``message`` as one JSON line of at most ``MAX_TERMINATION_MESSAGE`` bytes (and
    a little room for the newline a log adds): the message is cut until the line fits."""
    limit = MAX_TERMINATION_MESSAGE - 8

    def line(length: int) -> str:
        return json.dumps({**fields, "message": message[:length]})  # ASCII only: characters are bytes

    if len(line(len(message))) <= limit:
        return line(len(message))
    fits, too_long = 0, len(message)  # the longest prefix that fits, by bisection
    while too_long - fits > 1:
        middle = (fits + too_long) // 2
        if len(line(middle)) <= limit:
            fits = middle
        else:
            too_long = middle
    return line(fits)


def exit_if_refused_for_good(
    exc: BaseException,
    env: Mapping[str, str] | None = None,
    path: Path | None = None,
    *,
    model: str = "",
) -> None:
    """Report and exit when the pod asked for it and ``exc`` ended the loading of ``model`` (its URI):
    a refusal, a failed fetch or a failed load (any ``Exception``); else return."""
    from mlserving.storage import FetchError

    env = os.environ if env is None else env
    if env.get(EXIT_ENV, "").lower() != "true":
        return
    if isinstance(exc, UntrustedTypesError):
        report, code = refusal_report(exc), REFUSED_EXIT_CODE
    elif isinstance(exc, FetchError):
        report, code = fetch_failure_report(exc), FETCH_FAILED_EXIT_CODE
    elif isinstance(exc, Exception):
        report, code = load_failure_report(exc, model), LOAD_FAILED_EXIT_CODE
    else:
        return
    if path is None:
        path = Path(env.get(TERMINATION_PATH_ENV) or TERMINATION_MESSAGE_PATH)
    # Kubernetes mounts an empty file there; on a machine without one, nothing is created in /dev
    if path.is_file():
        try:
            path.write_text(report)
        except OSError:
            pass
    print(report, file=sys.stderr, flush=True)
    sys.stdout.flush()
    os._exit(code)
