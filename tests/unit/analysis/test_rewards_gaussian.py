"""Reward reader for Gaussian rewards: the queries it sends and the sum of squares it returns."""

from __future__ import annotations

import pytest

from mlrollouts.analysis import MetricProvider, QueryError, Sample, read_rewards


class TableProvider(MetricProvider):
    """Answers each query with the first answer whose key occurs in it (``[]`` otherwise)."""

    def __init__(self, answers):
        self.answers = answers
        self.calls: list[str] = []

    async def query_vector(self, promql, at=None):
        self.calls.append(promql)
        for key, answer in self.answers.items():
            if key in promql:
                return answer
        return []


ROUTER = {
    "mlrouter_reward_sum_squares": [Sample({"variant": "a"}, 50.0), Sample({"variant": "b"}, 8.0)],
    "mlrouter_reward_sum{": [Sample({"variant": "a"}, -10.0), Sample({"variant": "b"}, 4.0)],
    "mlrouter_feedback_total": [Sample({"variant": "a"}, 10.0), Sample({"variant": "b"}, 4.0)],
    "mlrouter_requests_total": [Sample({"variant": "a"}, 20.0), Sample({"variant": "b"}, 5.0)],
}


async def test_gaussian_reads_the_signed_sum_with_delta_and_the_squares_with_increase():
    p = TableProvider(ROUTER)
    out = await read_rewards(p, route="exp", variants=["a", "b", "c"], window="1m", gaussian=True)
    assert isinstance(out, dict), out
    assert (out["a"].reward_sum, out["a"].reward_sum_squares, out["a"].mean) == (-10.0, 50.0, -1.0)
    assert out["b"].reward_sum_squares == 8.0
    assert out["c"].reward_sum_squares == 0.0 and out["c"].mean is None
    queries = {q for q in p.calls}
    assert 'sum by (variant) (delta(mlrouter_reward_sum{route="exp"}[1m]))' in queries
    assert 'sum by (variant) (increase(mlrouter_reward_sum_squares{route="exp"}[1m]))' in queries
    assert 'sum by (variant) (increase(mlrouter_feedback_total{route="exp"}[1m]))' in queries


async def test_bernoulli_keeps_increase_and_reads_no_squares():
    p = TableProvider(ROUTER)
    out = await read_rewards(p, route="exp", variants=["a"], window="1m")
    assert isinstance(out, dict) and out["a"].reward_sum_squares is None
    assert not any("squares" in q or "delta(" in q for q in p.calls)
    assert 'sum by (variant) (increase(mlrouter_reward_sum{route="exp"}[1m]))' in p.calls


async def test_custom_queries_need_a_sum_of_squares_query_for_gaussian():
    p = TableProvider({})
    out = await read_rewards(
        p, route="exp", variants=["a"], window="1m", gaussian=True, reward_query="sum(x{v='{{ variant }}'})"
    )
    assert isinstance(out, QueryError) and "sum of squared rewards" in out.reason
    assert p.calls == []


async def test_custom_sum_of_squares_query_is_rendered_per_variant():
    p = TableProvider(
        {
            "revenue_squared": [Sample({}, 90.0)],
            "revenue{": [Sample({}, 30.0)],
            "mlrouter_feedback_total": [Sample({"variant": "a"}, 10.0)],
        }
    )
    out = await read_rewards(
        p,
        route="exp",
        variants=["a"],
        window="30s",
        gaussian=True,
        reward_query='sum(increase(revenue{variant="{{ variant }}"}[{{ interval }}]))',
        reward_squares_query='sum(increase(revenue_squared{variant="{{ variant }}"}[{{ interval }}]))',
    )
    assert isinstance(out, dict), out
    assert (out["a"].reward_sum, out["a"].reward_sum_squares) == (30.0, 90.0)
    assert 'sum(increase(revenue_squared{variant="a"}[30s]))' in p.calls


async def test_a_failed_or_bad_sum_of_squares_query_is_named():
    failed = TableProvider({"squares": QueryError("HTTP 503")})
    out = await read_rewards(failed, route="exp", variants=["a"], window="1m", gaussian=True)
    assert isinstance(out, QueryError) and out.reason == "reward sum of squares: HTTP 503"
    bad = await read_rewards(
        TableProvider({}),
        route="exp",
        variants=["a"],
        window="1m",
        gaussian=True,
        reward_query="sum(x{v='{{ variant }}'})",
        reward_squares_query="sum(y{v='{{ nope }}'})",
    )
    assert isinstance(bad, QueryError) and "nope" in bad.reason


@pytest.mark.parametrize("gaussian", [True, False])
async def test_requests_are_read_the_same_either_way(gaussian):
    p = TableProvider(ROUTER)
    out = await read_rewards(p, route="exp", variants=["a"], window="1m", gaussian=gaussian)
    assert isinstance(out, dict) and out["a"].requests == 20.0
