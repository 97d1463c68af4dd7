"""Snapshot manifests: canonical form, HMAC-SHA256 signature, verification.

The signature covers the canonical JSON of the manifest without its ``signature`` field: keys
sorted, no insignificant whitespace, UTF-8. Metrics are finite floats (a NaN has no canonical
JSON form and is left out before signing). A manifest without a signature, with another algorithm,
or whose signature does not match is refused.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

SIGNATURE_ALGORITHM = "HMAC-SHA256"
MANIFEST_FORMAT = "mlserving.learning/snapshot-v1"
MIN_KEY_BYTES = 16


class SnapshotError(RuntimeError):
    """A snapshot is missing, incomplete, unsigned or tampered with; the message says which and why."""


class SnapshotMissing(SnapshotError):
    """No snapshot of that number is published (yet)."""


def canonical_bytes(manifest: Mapping[str, Any]) -> bytes:
    body = {k: v for k, v in manifest.items() if k != "signature"}
    try:
        return json.dumps(
            body, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
        ).encode()
    except ValueError as exc:
        raise SnapshotError(f"manifest: not canonical JSON ({exc})") from None


def sign(manifest: Mapping[str, Any], key: bytes) -> dict[str, Any]:
    """A copy of ``manifest`` with its signature."""
    check_key(key)
    digest = hmac.new(key, canonical_bytes(manifest), hashlib.sha256).hexdigest()
    return {**manifest, "signature": {"algorithm": SIGNATURE_ALGORITHM, "value": digest}}


def verify(manifest: Mapping[str, Any], key: bytes, *, what: str = "snapshot") -> None:
    """Raise SnapshotError unless ``manifest`` carries a valid signature under ``key``."""
    check_key(key)
    signature = manifest.get("signature")
    if not isinstance(signature, Mapping) or not signature.get("value"):
        raise SnapshotError(f"{what}: the manifest is unsigned; refusing it")
    if signature.get("algorithm") != SIGNATURE_ALGORITHM:
        raise SnapshotError(
            f"{what}: signature algorithm {signature.get('algorithm')!r} is not {SIGNATURE_ALGORITHM}; refusing it"
        )
    expected = hmac.new(key, canonical_bytes(manifest), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, str(signature["value"])):
        raise SnapshotError(
            f"{what}: the manifest signature does not match (tampered with, or signed with another key); "
            "refusing it"
        )


def finite_metrics(metrics: Mapping[str, float]) -> dict[str, float]:
    return {name: float(value) for name, value in metrics.items() if math.isfinite(value)}


def check_key(key: bytes) -> None:
    if not isinstance(key, bytes) or len(key) < MIN_KEY_BYTES:
        raise SnapshotError(f"signing key: must be at least {MIN_KEY_BYTES} bytes")


def read_key_file(path: str | Path) -> bytes:
    """The signing key in a file (a mounted Secret); one trailing newline is not part of the key."""
    try:
        key = Path(path).read_bytes()
    except OSError as exc:
        raise SnapshotError(f"signing key file {path}: {exc.strerror or exc}") from None
    if key.endswith(b"\r\n"):
        key = key[:-2]
    elif key.endswith(b"\n"):
        key = key[:-1]
    if len(key) < MIN_KEY_BYTES:
        raise SnapshotError(f"signing key file {path}: the key must be at least {MIN_KEY_BYTES} bytes")
    return key
