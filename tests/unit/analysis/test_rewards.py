"""Reward reader: the queries it sends, and how answers become per-variant rewards."""

from __future__ import annotations

import pytest

from mlrollouts.analysis import MetricProvider, QueryError, Sample, read_rewards
from mlrollouts.analysis.rewards import _requests_query


class TableProvider(MetricProvider):
    def __init__(self, answers):
        self.answers = answers
        self.calls: list[tuple[str, float | None]] = []

    async def query_vector(self, promql, at=None):
        self.calls.append((promql, at))
        for key, answer in self.answers.items():
            if key in promql:
                return answer
        return []


def test_requests_query_shapes():
    assert _requests_query("r", "1m", 0, None, None) == (
        'sum by (variant) (increase(mlrouter_requests_total{route="r"}[1m]))'
    )
    assert _requests_query("r", "1m", 30, None, None).endswith("[1m] offset 30s))")
    # since 100 s ago, wait 30 s: requests of the first 70 s, read 30 s ago
    assert _requests_query("r", "100s", 30, since=1000.0, now=1100.0).endswith("[70s] offset 30s))")
    assert _requests_query("r", "10s", 30, since=1090.0, now=1100.0).endswith(") * 0")


async def test_rewards_per_variant_from_router_metrics():
    p = TableProvider(
        {
            "mlrouter_reward_sum": [Sample({"variant": "a"}, 12.0), Sample({"variant": "b"}, 3.5)],
            "mlrouter_feedback_total": [Sample({"variant": "a"}, 40.0), Sample({"variant": "b"}, 10.0)],
            "mlrouter_requests_total": [
                Sample({"variant": "a"}, 100.0),
                Sample({"variant": "b"}, float("nan")),
            ],
        }
    )
    out = await read_rewards(p, route="exp", variants=["a", "b", "c"], since=1000.0, now=1600.4)
    assert out["a"].mean == pytest.approx(0.3)
    assert (out["b"].requests, out["b"].feedback, out["b"].reward_sum) == (0.0, 10.0, 3.5)
    assert out["c"].mean is None
    assert all("[601s]" in q and at == 1600.4 for q, at in p.calls)
    assert all('route="exp"' in q for q, _ in p.calls)


async def test_custom_reward_query_is_rendered_per_variant():
    p = TableProvider({'variant="a"': [Sample({}, 2.0)], 'variant="b"': QueryError("boom")})
    ok = await read_rewards(
        p,
        route="exp",
        variants=["a"],
        window="1m",
        reward_query='sum(x{variant="{{ variant }}"}[{{ interval }}])',
    )
    assert ok["a"].reward_sum == 2.0
    assert ('sum(x{variant="a"}[1m])', None) in p.calls
    failed = await read_rewards(
        p, route="exp", variants=["a", "b"], window="1m", reward_query='sum(x{variant="{{ variant }}"})'
    )
    assert isinstance(failed, QueryError) and "variant 'b': boom" in failed.reason
    unknown = await read_rewards(p, route="exp", variants=["a"], window="1m", reward_query="{{ colour }}")
    assert isinstance(unknown, QueryError) and "'colour'" in unknown.reason


async def test_window_or_since_exactly_one():
    p = TableProvider({})
    assert isinstance(await read_rewards(p, route="r", variants=["a"]), QueryError)
    assert isinstance(
        await read_rewards(p, route="r", variants=["a"], window="1m", since=1.0, now=2.0), QueryError
    )
    assert isinstance(await read_rewards(p, route="r", variants=["a"], since=1.0), QueryError)
    assert isinstance(await read_rewards(p, route="r", variants=["a"], window="1 m"), QueryError)
