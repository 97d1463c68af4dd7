"""The router process credits unbounded rewards: sum and sum of squares per variant, negative rewards
included; a reward whose square overflows is refused and counts nowhere."""

from __future__ import annotations

import httpx
import pytest
from router_testing import route, table, variant

pytestmark = pytest.mark.integration

INFER = {"inputs": [{"name": "x", "shape": [1, 1], "datatype": "FP32", "data": [1.0]}]}
REWARDS = [3.0, -1.0, -2.5, 0.5]


def test_reward_sum_and_sum_of_squares_per_variant(start_upstream, start_router):
    a = start_upstream("a")
    router = start_router(table(route(variants=[variant("a", a, weight=1)])))
    with httpx.Client(timeout=10) as client:
        ids = [client.post(f"{router.url}/v2/models/iris/infer", json=INFER).json()["id"] for _ in REWARDS]
        for response_id, reward in zip(ids, REWARDS, strict=True):
            answer = client.post(
                f"{router.url}/v2/models/iris/feedback", json={"id": response_id, "reward": reward}
            )
            assert answer.status_code == 200, answer.text
        too_large = client.post(f"{router.url}/v2/models/iris/feedback", json={"id": ids[0], "reward": 1e200})
        assert too_large.status_code == 400 and "reward" in too_large.json()["error"]
        labelled = client.post(f"{router.url}/v2/models/iris/feedback", json={"id": ids[1], "label": 1})
        assert labelled.status_code == 200, labelled.text
    labels = {"route": "iris", "variant": "a"}
    assert router.metric("mlrouter_feedback_total", **labels) == len(REWARDS) + 1
    assert router.metric("mlrouter_reward_sum", **labels) == pytest.approx(sum(REWARDS))
    assert router.metric("mlrouter_reward_sum_squares", **labels) == pytest.approx(
        sum(r * r for r in REWARDS)
    )
    assert "# TYPE mlrouter_reward_sum_squares gauge" in router.metrics()
