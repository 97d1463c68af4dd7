"""Response ids and the feedback they enable.

Every response carries an ``id``: the request's own id when it has one (echoed, as the protocol
asks), otherwise a generated one. Feedback is accepted for an id this server produced:

- ids seen in recent responses (echoed or generated) are remembered in a bounded cache, together
  with the prediction, so labelled feedback can be scored; a router that puts its own response id in
  the request's ``id`` field therefore gets feedback accepted when it forwards the client's body.
  The cache (``mlserving.feedback.RecentIds``) keeps the ``cache_size`` most recent distinct ids,
  every id for at least ``cache_size / 2`` responses, as 64-bit keyed digests in flat arrays: about
  3 MB when full at the default 100,000 (plus predictions that are lists or new strings);
- with ``MLSERVING_ID_KEY`` set, generated ids are ``<nonce>.<hmac>`` and any replica sharing the
  key accepts them statelessly, even after they left the cache. Any ``<body>.<signature>`` id whose
  signature is a truncated (>= 12 bytes) base64url HMAC-SHA256 of the body under that key is
  accepted, so giving the servers the router's signing key makes every replica accept the ids of
  the router (``route.variant.time.nonce.sig``) in forwarded feedback, whichever replica served it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import random
import secrets
from typing import Any

from mlserving.feedback import RecentIds

_SIG_BYTES = 12
_NONCE_DIGITS = 24  # hex digits of a generated id (96 random bits)


class ResponseIds:
    def __init__(self, key: str | None, cache_size: int) -> None:
        self._mac = hmac.new(key.encode(), digestmod=hashlib.sha256) if key else None
        self._random = random.Random(secrets.randbits(128))
        self._recent = RecentIds(cache_size, values=True)
        self._cache_size = cache_size

    def new(self) -> str:
        nonce = f"{self._random.getrandbits(96):0{_NONCE_DIGITS}x}"
        if self._mac is None:
            return nonce
        return f"{nonce}.{self._sign(nonce)}"

    def _sign(self, body: str) -> str:
        assert self._mac is not None
        mac = self._mac.copy()
        mac.update(body.encode())
        return base64.urlsafe_b64encode(mac.digest()[:_SIG_BYTES]).decode().rstrip("=")

    def remember(self, response_id: str, prediction: Any) -> None:
        self._recent.add(response_id, prediction)

    def lookup(self, response_id: str) -> tuple[bool, Any]:
        """(known, prediction or None)."""
        known, prediction = self._recent.get(response_id)
        if known:
            return True, prediction
        if self._mac is not None and self._signed(response_id):
            return True, None
        return False, None

    def _signed(self, response_id: str) -> bool:
        """``<body>.<signature>``: a base64url HMAC-SHA256 of the body, truncated to 12 bytes or more."""
        assert self._mac is not None
        body, _, sig = response_id.rpartition(".")
        if not body or not sig or len(sig) > 64:
            return False
        try:
            given = base64.urlsafe_b64decode(sig + "=" * (-len(sig) % 4))
        except (binascii.Error, ValueError):
            return False
        if len(given) < _SIG_BYTES:
            return False
        mac = self._mac.copy()
        mac.update(body.encode())
        return hmac.compare_digest(mac.digest()[: len(given)], given)

    @property
    def cache_size(self) -> int:
        return self._cache_size
