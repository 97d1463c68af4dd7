"""Manifest signing: canonical form, HMAC-SHA256, and refusal of unsigned or tampered manifests."""

from __future__ import annotations

import hashlib
import hmac
import json

import pytest
from learning_testing import KEY

from mlserving.learning.manifest import (
    SnapshotError,
    canonical_bytes,
    finite_metrics,
    read_key_file,
    sign,
    verify,
)

MANIFEST = {"version": 3, "parent": 2, "samples": 3000, "metrics": {"accuracy": 0.91}, "data_version": 17}


def test_a_signed_manifest_verifies():
    signed = sign(MANIFEST, KEY)
    verify(signed, KEY)
    assert signed["signature"]["algorithm"] == "HMAC-SHA256"
    expected = hmac.new(KEY, canonical_bytes(MANIFEST), hashlib.sha256).hexdigest()
    assert signed["signature"]["value"] == expected


def test_the_canonical_form_ignores_key_order_and_whitespace():
    shuffled = json.loads(json.dumps(dict(reversed(list(MANIFEST.items()))), indent=4))
    assert canonical_bytes(shuffled) == canonical_bytes(MANIFEST)
    assert canonical_bytes(MANIFEST).startswith(b'{"data_version":17,"metrics"')
    verify(json.loads(json.dumps(sign(MANIFEST, KEY), indent=2)), KEY)


@pytest.mark.parametrize(
    ("field", "value"),
    [("samples", 3001), ("version", 4), ("metrics", {"accuracy": 0.99}), ("parent", None), ("extra", 1)],
)
def test_any_change_is_detected(field, value):
    tampered = {**sign(MANIFEST, KEY), field: value}
    with pytest.raises(SnapshotError, match="signature does not match"):
        verify(tampered, KEY)


def test_an_unsigned_manifest_is_refused():
    with pytest.raises(SnapshotError, match="snapshot 3: the manifest is unsigned"):
        verify(MANIFEST, KEY, what="snapshot 3")
    with pytest.raises(SnapshotError, match="unsigned"):
        verify({**MANIFEST, "signature": {"algorithm": "HMAC-SHA256", "value": ""}}, KEY)


def test_another_key_or_algorithm_is_refused():
    signed = sign(MANIFEST, KEY)
    with pytest.raises(SnapshotError, match="signature does not match"):
        verify(signed, b"another-key-of-enough-length")
    weaker = {**signed, "signature": {**signed["signature"], "algorithm": "HMAC-MD5"}}
    with pytest.raises(SnapshotError, match="'HMAC-MD5' is not HMAC-SHA256"):
        verify(weaker, KEY)


def test_a_short_key_is_refused():
    with pytest.raises(SnapshotError, match="signing key: must be at least 16 bytes"):
        sign(MANIFEST, b"short")


def test_non_finite_metrics_are_left_out_and_never_signed():
    assert finite_metrics({"accuracy": 0.5, "logLoss": float("nan"), "rmse": float("inf")}) == {
        "accuracy": 0.5
    }
    with pytest.raises(SnapshotError, match="not canonical JSON"):
        sign({**MANIFEST, "metrics": {"logLoss": float("nan")}}, KEY)


def test_the_key_file_loses_one_trailing_newline(tmp_path):
    path = tmp_path / "key"
    path.write_bytes(KEY + b"\n")
    assert read_key_file(path) == KEY
    path.write_bytes(KEY + b"\r\n")
    assert read_key_file(path) == KEY
    path.write_bytes(b"tiny\n")
    with pytest.raises(SnapshotError, match="at least 16 bytes"):
        read_key_file(path)
    with pytest.raises(SnapshotError, match=r"signing key file .*missing"):
        read_key_file(tmp_path / "missing")
