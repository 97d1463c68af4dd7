"""Gaussian rewards read from a real Prometheus scraping exporter processes that play a router's
feedback metrics with unbounded rewards, one of them always negative (its reward sum only falls)."""

from __future__ import annotations

import contextlib
import time

import pytest

from mlrollouts.analysis import read_rewards
from mlrollouts.analysis.provider import PrometheusProvider
from support import wait_until
from support.exporters import serving_exporter

pytestmark = pytest.mark.integration

ROUTE = "revenue"
# rewards given in turn: "up" has mean 1 and variance 4, "down" mean -3 and variance 1
VARIANTS = {"up": [3.0, -1.0], "down": [-2.0, -4.0]}


def variance(sum_squares: float, total: float, n: float) -> float:
    return sum_squares / n - (total / n) ** 2


async def test_mean_and_variance_of_signed_rewards_from_router_metrics(tmp_path, prometheus):
    with contextlib.ExitStack() as stack:
        targets = []
        for variant, rewards in VARIANTS.items():
            exporter = stack.enter_context(
                serving_exporter(
                    tmp_path,
                    model=ROUTE,
                    revision=variant,
                    route=ROUTE,
                    rps=40,
                    feedback_ratio=1.0,
                    rewards=rewards,
                )
            )
            targets.append(exporter.target)
        prometheus.set_targets([(targets, {})])
        full = f'count_over_time(mlrouter_reward_sum_squares{{route="{ROUTE}"}}[10s]) >= 7'
        wait_until(
            lambda: len(prometheus.query(full)) == len(VARIANTS),
            timeout=60,
            interval=0.5,
            message="7 scrapes of every exporter",
        )
        provider = PrometheusProvider(prometheus.url, timeout=5.0)
        try:
            read = await read_rewards(
                provider, route=ROUTE, variants=["up", "down", "absent"], window="5s", gaussian=True
            )
            assert isinstance(read, dict), read
            up, down, absent = read["up"], read["down"], read["absent"]
            assert up.feedback == pytest.approx(200, rel=0.35)
            assert up.mean == pytest.approx(1.0, abs=0.15)
            assert down.mean == pytest.approx(-3.0, abs=0.3)
            assert up.reward_sum_squares is not None and down.reward_sum_squares is not None
            assert variance(up.reward_sum_squares, up.reward_sum, up.feedback) == pytest.approx(4.0, abs=0.6)
            assert variance(down.reward_sum_squares, down.reward_sum, down.feedback) == pytest.approx(
                1.0, abs=0.6
            )
            assert (absent.feedback, absent.reward_sum, absent.reward_sum_squares) == (0, 0, 0)

            now = time.time()
            since = await read_rewards(
                provider, route=ROUTE, variants=["down"], since=now - 6, now=now, gaussian=True
            )
            assert isinstance(since, dict), since
            assert since["down"].mean == pytest.approx(-3.0, abs=0.3)

            # Bernoulli reading leaves the sum of squares out
            plain = await read_rewards(provider, route=ROUTE, variants=["up"], window="5s")
            assert isinstance(plain, dict) and plain["up"].reward_sum_squares is None

            custom = await read_rewards(
                provider,
                route=ROUTE,
                variants=["up"],
                window="5s",
                gaussian=True,
                reward_query='sum(delta(mlrouter_reward_sum{variant="{{ variant }}"}[{{ interval }}]))',
                reward_squares_query=(
                    'sum(increase(mlrouter_reward_sum_squares{variant="{{ variant }}"}[{{ interval }}]))'
                ),
            )
            assert isinstance(custom, dict), custom
            assert custom["up"].reward_sum_squares == pytest.approx(5.0 * custom["up"].feedback, rel=0.15)
        finally:
            await provider.close()
