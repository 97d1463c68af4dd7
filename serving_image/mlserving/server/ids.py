"""Response ids and the feedback they enable.

Every response carries an ``id``: the request's own id when it has one (echoed, as the protocol
asks), otherwise a generated one. Feedback is accepted for an id this server produced:

- ids seen in recent responses (echoed or generated) are remembered in a bounded cache, together
  with the prediction, so labelled feedback can be scored; a router that puts its own response id in
  the request's ``id`` field therefore gets feedback accepted when it forwards the client's body;
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

_SIG_BYTES = 12
_NONCE_DIGITS = 24  # hex digits of a generated id (96 random bits)


class ResponseIds:
    def __init__(self, key: str | None, cache_size: int) -> None:
        self._mac = hmac.new(key.encode(), digestmod=hashlib.sha256) if key else None
        self._random = random.Random(secrets.randbits(128))
        # Two generations of plain dicts: the newest holds up to half the size; when it is full it
        # becomes the old one and the previous old generation is dropped. Cheaper in memory and time
        # than an LRU, and every id stays known for at least ``cache_size / 2`` responses.
        self._new: dict[str | int, Any] = {}
        self._old: dict[str | int, Any] = {}
        self._generation = max(1, cache_size // 2)
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
        new = self._new
        new[_key(response_id)] = prediction
        if len(new) >= self._generation:
            self._old = new
            self._new = {}

    def lookup(self, response_id: str) -> tuple[bool, Any]:
        """(known, prediction or None)."""
        key = _key(response_id)
        for generation in (self._new, self._old):
            if key in generation:
                return True, generation[key]
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


def _key(response_id: str) -> str | int:
    """How an id is remembered: a generated plain id as the number it spells (48 bytes instead of 80
    for the text, a third less memory for a full cache), any other id as it is.

    Only the canonical spelling (24 lowercase hex digits) becomes a number, so two different ids
    never share a key, and a number never equals a text.
    """
    if len(response_id) == _NONCE_DIGITS:
        try:
            number = int(response_id, 16)
        except ValueError:
            return response_id
        if f"{number:0{_NONCE_DIGITS}x}" == response_id:
            return number
    return response_id
