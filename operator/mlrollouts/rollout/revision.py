"""Revision identity: a short, stable hash of the pod-affecting part of a spec."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

REVISION_LENGTH = 10


def _canonical(value: Any) -> Any:
    """Drop ``None`` and empty containers so adding an optional field does not change old revisions."""
    if isinstance(value, Mapping):
        out = {str(k): _canonical(v) for k, v in value.items()}
        return {k: v for k, v in out.items() if v is not None and v != {} and v != []}
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    return value


def revision_hash(model: Mapping[str, Any], serving: Mapping[str, Any] | None = None) -> str:
    """Hash of ``spec.model`` and ``spec.serving``: equal specs give equal revisions, key order ignored.

    The result is lowercase hex, so ``<name>-<rev>`` stays a valid DNS label.
    """
    payload = json.dumps(
        {"model": _canonical(model), "serving": _canonical(serving or {})},
        sort_keys=True,
        separators=(",", ":"),
        default=str,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:REVISION_LENGTH]
