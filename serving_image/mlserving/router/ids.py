"""Signed response ids: they name the route and variant that served a response.

An id looks like ``iris.canary.1732700000.9f3a61c2b04e.<signature>``: route, variant, issue time
(Unix seconds), a random nonce and a truncated HMAC-SHA256 of the rest. Any router replica holding
the same key can attribute feedback to the variant without shared state; a forged or expired id is
rejected.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import logging
import os
import random
import secrets
from dataclasses import dataclass

SIGNING_KEY_ENV = "MLROUTER_SIGNING_KEY"
_SIGNATURE_BYTES = 16
_MAX_ID_LENGTH = 256
_URL_SAFE = bytes.maketrans(b"+/", b"-_")

log = logging.getLogger(__name__)


class InvalidId(ValueError):
    """A response id that cannot be credited; ``status`` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class ResponseId:
    route: str
    variant: str
    issued_at: int


class IdSigner:
    def __init__(self, key: bytes) -> None:
        if len(key) < 16:
            raise ValueError(f"the signing key must have at least 16 bytes (got {len(key)})")
        self._mac = hmac.new(key, digestmod="sha256")
        self._random = random.Random(secrets.randbits(64))

    @classmethod
    def from_environment(cls, environ: dict[str, str] | None = None) -> IdSigner:
        """The key from ``MLROUTER_SIGNING_KEY``; a random per-process key (with a warning) when unset."""
        value = (os.environ if environ is None else environ).get(SIGNING_KEY_ENV, "")
        if value:
            return cls(value.encode())
        log.warning(
            "%s is not set: using a random per-process key; feedback can then only be credited by "
            "this replica. Set the same key on every router replica.",
            SIGNING_KEY_ENV,
        )
        return cls(secrets.token_bytes(32))

    def _sign(self, message: bytes) -> str:
        mac = self._mac.copy()
        mac.update(message)
        # URL-safe base64 without padding (binascii: the base64 module's function, without its frames).
        encoded = binascii.b2a_base64(mac.digest()[:_SIGNATURE_BYTES], newline=False)
        return encoded.translate(_URL_SAFE).rstrip(b"=").decode()

    def issue(self, route: str, variant: str, now: float) -> str:
        body = f"{route}.{variant}.{int(now)}.{self._random.getrandbits(48):012x}"
        return f"{body}.{self._sign(body.encode())}"

    def verify(self, response_id: object, now: float, ttl_seconds: float) -> ResponseId:
        if not isinstance(response_id, str) or not response_id:
            raise InvalidId("'id' must be a non-empty string (the id of a router response)", 400)
        if len(response_id) > _MAX_ID_LENGTH:
            raise InvalidId("'id' is too long to be a router response id", 400)
        body, _, signature = response_id.rpartition(".")
        parts = body.split(".")
        if len(parts) != 4 or not signature:
            raise InvalidId("'id' is not a router response id (expected route.variant.time.nonce.sig)", 400)
        try:
            expected = base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4))
        except (binascii.Error, ValueError):
            raise InvalidId("'id' has a malformed signature", 403) from None
        mac = self._mac.copy()
        mac.update(body.encode())
        if not hmac.compare_digest(mac.digest()[:_SIGNATURE_BYTES], expected):
            raise InvalidId("'id' signature does not match: not issued by a router with this key", 403)
        route, variant, issued, _nonce = parts
        issued_at = int(issued)
        if now - issued_at > ttl_seconds:
            raise InvalidId(
                f"'id' expired: issued {int(now - issued_at)} s ago, ttl {int(ttl_seconds)} s", 410
            )
        return ResponseId(route=route, variant=variant, issued_at=issued_at)
