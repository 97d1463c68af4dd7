"""Signed response ids: verified by any holder of the key, forged and expired ones refused."""

from __future__ import annotations

import pytest

from mlserving.router.ids import IdSigner, InvalidId

KEY = b"k" * 32


def test_round_trip_and_another_replica_with_the_same_key():
    issued = IdSigner(KEY).issue("iris", "canary", now=1_000_000.0)
    credited = IdSigner(KEY).verify(issued, now=1_000_100.0, ttl_seconds=3600)
    assert (credited.route, credited.variant, credited.issued_at) == ("iris", "canary", 1_000_000)


def test_ids_are_unique():
    signer = IdSigner(KEY)
    assert len({signer.issue("r", "v", 0) for _ in range(10_000)}) == 10_000


@pytest.mark.parametrize(
    "tamper",
    [
        lambda i: i.replace(".canary.", ".stable."),
        lambda i: i[:-2] + ("AA" if not i.endswith("AA") else "BB"),
        lambda i: i.rsplit(".", 1)[0] + ".!!!",
    ],
)
def test_forged_ids_are_refused_with_403(tamper):
    issued = IdSigner(KEY).issue("iris", "canary", now=1_000_000.0)
    with pytest.raises(InvalidId) as exc:
        IdSigner(KEY).verify(tamper(issued), now=1_000_000.0, ttl_seconds=60)
    assert exc.value.status == 403


def test_other_key_expired_and_malformed():
    issued = IdSigner(KEY).issue("iris", "canary", now=1_000_000.0)
    with pytest.raises(InvalidId) as exc:
        IdSigner(b"x" * 32).verify(issued, now=1_000_000.0, ttl_seconds=60)
    assert exc.value.status == 403
    with pytest.raises(InvalidId, match="expired") as exc:
        IdSigner(KEY).verify(issued, now=1_000_061.0, ttl_seconds=60)
    assert exc.value.status == 410
    for bad in (None, 5, "", "abc", "a.b.c", "x" * 1000):
        with pytest.raises(InvalidId) as exc:
            IdSigner(KEY).verify(bad, now=0, ttl_seconds=60)
        assert exc.value.status == 400


def test_environment_key_and_short_key():
    a = IdSigner.from_environment({"MLROUTER_SIGNING_KEY": "s" * 32})
    b = IdSigner.from_environment({"MLROUTER_SIGNING_KEY": "s" * 32})
    assert b.verify(a.issue("r", "v", 10), now=10, ttl_seconds=1).variant == "v"
    random_a, random_b = IdSigner.from_environment({}), IdSigner.from_environment({})
    with pytest.raises(InvalidId):
        random_b.verify(random_a.issue("r", "v", 10), now=10, ttl_seconds=1)
    with pytest.raises(ValueError, match="16 bytes"):
        IdSigner(b"short")
