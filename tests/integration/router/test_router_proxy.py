"""The router as a real process in front of real upstream processes: forwarding, split, shadow, feedback."""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import aiohttp
import httpx
import pytest
from router_testing import route, table, variant

from mlserving.router.split import Splitter
from support import wait_until

pytestmark = pytest.mark.integration

INFER = {"inputs": [{"name": "x", "shape": [1, 1], "datatype": "FP32", "data": [1.0]}]}


class Answer:
    """Status, headers and JSON body of one response (read before the connection is reused)."""

    def __init__(self, status: int, headers: dict[str, str], body: dict) -> None:
        self.status_code, self.headers, self.body = status, headers, body


async def infer_many(url: str, count: int, concurrency: int = 16, headers_for=None) -> list[Answer]:
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=30)) as session:
        semaphore = asyncio.Semaphore(concurrency)

        async def one(i: int) -> Answer:
            async with semaphore:
                headers = headers_for(i) if headers_for else None
                async with session.post(
                    f"{url}/v2/models/iris/infer", json=INFER, headers=headers
                ) as response:
                    return Answer(response.status, dict(response.headers), await response.json())

        return await asyncio.gather(*(one(i) for i in range(count)))


def test_forwards_the_inference_protocol(start_upstream, start_router):
    stable = start_upstream("stable", "--label", "1")
    router = start_router(table(route(variants=[variant("stable", stable, weight=1, model="iris-v1")])))
    with httpx.Client(base_url=router.url, timeout=10) as client:
        response = client.post(
            "/v2/models/iris/infer?trace=1",
            json=INFER,
            headers={"x-custom": "kept", "connection": "x-secret", "x-secret": "hop", "te": "trailers"},
        )
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["outputs"][0]["data"] == [1]
        assert body["path"] == "/v2/models/iris-v1/infer"  # upstream model name of the variant
        assert body["query"] == "trace=1"
        assert response.headers["x-mlrollouts-variant"] == "stable"
        assert body["id"] == response.headers["x-mlrollouts-id"]
        assert body["id"].startswith("iris.stable.")
        seen = stable.stats()
        assert seen["last_id_header"] == body["id"]  # the upstream can log the id feedback will carry
        assert seen["last_headers"]["x-custom"] == "kept"
        assert "x-secret" not in seen["last_headers"] and "te" not in seen["last_headers"]

        v1 = client.post("/v1/models/iris:predict", json={"instances": [[1.0]]})
        assert v1.status_code == 200 and v1.json()["predictions"] == [1]
        assert v1.json()["id"].startswith("iris.stable.")
        metadata = client.get("/v2/models/iris")
        assert metadata.status_code == 200 and metadata.json()["served_by"] == "stable"
        assert metadata.headers["x-mlrollouts-variant"] == "stable"
        assert client.get("/v2/health/live").json() == {"live": True}
        assert client.get("/v2/health/ready").status_code == 200
        assert client.get("/v2").json()["name"] == "mlserving-router"
        missing = client.post("/v2/models/unknown/infer", json=INFER)
        assert missing.status_code == 404 and "unknown" in missing.json()["error"]
    assert router.metric("mlrouter_requests_total", route="iris", variant="stable", code="200") == 3


def test_random_split_matches_weights(plain_upstreams, start_router):
    a, b = plain_upstreams["a"], plain_upstreams["b"]
    router = start_router(table(route(variants=[variant("a", a, weight=90), variant("b", b, weight=10)])))
    responses = asyncio.run(infer_many(router.url, 2000))
    counts = Counter(r.headers["x-mlrollouts-variant"] for r in responses)
    assert all(r.status_code == 200 for r in responses)
    # 2000 draws at p=0.1: sd 0.67 pp; 3 pp is 4.5 sd. (Exact shares are checked on 200k draws in unit tests.)
    assert counts["b"] / 2000 == pytest.approx(0.10, abs=0.03), counts
    assert router.metric("mlrouter_requests_total", route="iris", variant="b", code="200") == counts["b"]


def test_sticky_assignment_is_stable_and_follows_rendezvous_hashing(plain_upstreams, start_router):
    ups = plain_upstreams
    weights = {"a": 70, "b": 20, "c": 10}
    variants = [variant(n, ups[n], weight=w) for n, w in weights.items()]
    router = start_router(table(route(variants=variants, stickiness={"header": "x-user-id"})))
    users = [f"user-{i}" for i in range(400)]
    first = asyncio.run(infer_many(router.url, 400, headers_for=lambda i: {"x-user-id": users[i]}))
    again = asyncio.run(infer_many(router.url, 400, headers_for=lambda i: {"x-user-id": users[-1 - i]}))
    assigned = {users[i]: r.headers["x-mlrollouts-variant"] for i, r in enumerate(first)}
    assert {users[-1 - i]: r.headers["x-mlrollouts-variant"] for i, r in enumerate(again)} == assigned
    expected = Splitter(list(weights.items()))
    assert assigned == {u: expected.pick_sticky(u.encode()) for u in users}

    # Weights change: only keys that must move do move (b grows, so nobody leaves b).
    weights = {"a": 50, "b": 40, "c": 10}
    router.write_table(table(route(variants=[variant(n, ups[n], weight=w) for n, w in weights.items()],
                                   stickiness={"header": "x-user-id"})))  # fmt: skip
    wait_until(
        lambda: httpx.get(f"{router.url}/routes").json()["routes"][0]["variants"][1]["weight"] == 40,
        timeout=5,
        message="new weights applied",
    )
    after = asyncio.run(infer_many(router.url, 400, headers_for=lambda i: {"x-user-id": users[i]}))
    moved = {users[i]: r.headers["x-mlrollouts-variant"] for i, r in enumerate(after)}
    assert moved == {u: Splitter(list(weights.items())).pick_sticky(u.encode()) for u in users}
    assert all(moved[u] == "b" for u in users if assigned[u] == "b")


def test_sticky_by_cookie(plain_upstreams, start_router):
    a, b = plain_upstreams["a"], plain_upstreams["b"]
    router = start_router(
        table(
            route(
                variants=[variant("a", a, weight=1), variant("b", b, weight=1)], stickiness={"cookie": "uid"}
            )
        )
    )
    with httpx.Client(base_url=router.url, timeout=10) as client:
        for user in ("alice", "bob", "carol", "dave"):
            seen = {
                client.post(
                    "/v2/models/iris/infer", json=INFER, headers={"cookie": f"theme=dark; uid={user}"}
                ).headers["x-mlrollouts-variant"]
                for _ in range(5)
            }
            assert seen == {Splitter([("a", 1), ("b", 1)]).pick_sticky(user.encode())}


def test_slow_shadow_never_delays_the_primary_and_agreement_is_counted(start_upstream, start_router):
    primary = start_upstream("primary", "--label", "3", "--value", "1.0")
    shadow = start_upstream("shadow", "--label", "3", "--value", "1.0", "--delay", "2")
    router = start_router(
        table(
            route(
                variants=[variant("primary", primary, weight=1), variant("shadow", shadow)],
                shadow={"variant": "shadow", "percent": 100},
            )
        )
    )
    with httpx.Client(base_url=router.url, timeout=10) as client:
        client.post("/v2/models/iris/infer", json=INFER)  # warm the pools
        durations = []
        for _ in range(10):
            started = time.monotonic()
            response = client.post("/v2/models/iris/infer", json=INFER)
            durations.append(time.monotonic() - started)
            assert response.status_code == 200
            assert response.headers["x-mlrollouts-variant"] == "primary"
            assert response.json()["outputs"][0]["data"] == [3]
    # The shadow sleeps 2 s per request; the primary answers never waited for it.
    assert max(durations) < 1.0, durations
    wait_until_metric(
        router, "mlrouter_shadow_agreement_total", 11, route="iris", variant="shadow", agree="true"
    )
    assert shadow.stats()["infer"] == 11
    assert router.metric("mlrouter_requests_total", route="iris", variant="shadow") == 0


def test_shadow_disagreement_is_counted(start_upstream, start_router):
    primary = start_upstream("primary", "--label", "1")
    shadow = start_upstream("shadow", "--label", "2")
    router = start_router(
        table(
            route(
                variants=[variant("primary", primary, weight=1), variant("shadow", shadow)],
                shadow={"variant": "shadow", "percent": 50},
            )
        )
    )
    asyncio.run(infer_many(router.url, 400))
    wait_until_metric(
        router, "mlrouter_shadow_requests_total", 1, route="iris", variant="shadow", outcome="ok"
    )
    time.sleep(0.5)
    disagree = router.metric("mlrouter_shadow_agreement_total", variant="shadow", agree="false")
    assert router.metric("mlrouter_shadow_agreement_total", variant="shadow", agree="true") == 0
    assert disagree / 400 == pytest.approx(0.5, abs=0.1)


def test_feedback_is_credited_by_another_replica(start_upstream, start_router):
    a, b = start_upstream("a"), start_upstream("b")
    routes = table(route(variants=[variant("a", a, weight=1), variant("b", b, weight=1)]))
    replica_one, replica_two = start_router(routes), start_router(routes)
    stranger = start_router(routes, "another-key-entirely-0123456789")
    served = Counter()
    with httpx.Client(timeout=10) as client:
        ids = []
        for _ in range(20):
            response = client.post(f"{replica_one.url}/v2/models/iris/infer", json=INFER)
            ids.append((response.json()["id"], response.headers["x-mlrollouts-variant"]))
        for response_id, served_by in ids:
            served[served_by] += 1
            answer = client.post(
                f"{replica_two.url}/v2/models/iris/feedback", json={"id": response_id, "reward": 0.5}
            )
            assert answer.status_code == 200, answer.text
            assert answer.json()["variant"] == served_by and answer.json()["forwarded"] is True
        forged = ids[0][0].replace(".a.", ".b.") if ".a." in ids[0][0] else ids[0][0].replace(".b.", ".a.")
        rejected = client.post(f"{replica_two.url}/v2/models/iris/feedback", json={"id": forged, "reward": 1})
        assert rejected.status_code == 403 and "signature" in rejected.json()["error"]
        other_key = client.post(
            f"{stranger.url}/v2/models/iris/feedback", json={"id": ids[0][0], "reward": 1}
        )
        assert other_key.status_code == 403
        for bad, status in [
            (b"not json", 400),
            (b"[1, 2]", 400),
            (b'{"reward": 1}', 400),
            (b'{"id": "x.y.1.2.sig"}', 400),
            (b'{"id": "garbage", "reward": 1}', 400),
            (b'{"id": "iris.a.1.2.c2ln", "reward": "lots"}', 400),
        ]:
            response = client.post(f"{replica_two.url}/v2/models/iris/feedback", content=bad)
            assert response.status_code == status, (bad, response.text)
            assert "error" in response.json()
        assert client.get(f"{replica_two.url}/v2/models/iris/feedback").status_code == 405
    for name in ("a", "b"):
        assert replica_two.metric("mlrouter_feedback_total", route="iris", variant=name) == served[name]
        assert replica_two.metric("mlrouter_reward_sum", route="iris", variant=name) == 0.5 * served[name]
        assert replica_one.metric("mlrouter_feedback_total", route="iris", variant=name) == 0
    forwarded = a.stats()["feedback"] + b.stats()["feedback"]
    assert len(forwarded) == 20 and {f["id"] for f in forwarded} == {i for i, _ in ids}


def wait_until_metric(router, name: str, at_least: float, **labels: str) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if router.metric(name, **labels) >= at_least:
            return
        time.sleep(0.05)
    raise AssertionError(f"{name}{labels} stayed below {at_least}: {router.metric(name, **labels)}")
