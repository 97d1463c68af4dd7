"""Bandit rewards read while traffic flows: a real router credits feedback, a real Prometheus scrapes
it, and with ``rewardWait`` the mean reward of each variant is its known rate, not more."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import httpx
import pytest
import yaml

from mlrollouts.analysis import read_rewards
from mlrollouts.analysis.provider import PrometheusProvider
from support import PYTHON, free_port, running, wait_until

pytestmark = pytest.mark.integration

UPSTREAM_SCRIPT = Path(__file__).parents[1] / "router" / "upstream.py"
ROUTE = "ctr"
RATES = {"a": 0.7, "b": 0.3}
"""Each variant rewards this share of its requests, in a fixed pattern of ten."""
INFER = {"inputs": [{"name": "x", "shape": [1, 1], "datatype": "FP32", "data": [1.0]}]}
WAIT = 4.0


class Traffic(threading.Thread):
    """Requests through the router, each answered at once with feedback: 1 for the first
    ``rate * 10`` of every ten requests of a variant, 0 for the others."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url, self.stop, self.sent = url, threading.Event(), dict.fromkeys(RATES, 0)
        self.errors: list[str] = []

    def run(self) -> None:
        with httpx.Client(timeout=10) as client:
            while not self.stop.is_set():
                answer = client.post(f"{self.url}/v2/models/{ROUTE}/infer", json=INFER)
                response_id = answer.json().get("id", "")
                variant = response_id.split(".")[1] if response_id.count(".") >= 4 else ""
                if answer.status_code != 200 or variant not in RATES:
                    self.errors.append(f"{answer.status_code} {answer.text[:200]}")
                    continue
                reward = 1.0 if self.sent[variant] % 10 < RATES[variant] * 10 else 0.0
                self.sent[variant] += 1
                feedback = {"id": response_id, "reward": reward}
                client.post(f"{self.url}/v2/models/{ROUTE}/feedback", json=feedback)
                time.sleep(0.01)


def route_table(upstream: str) -> dict:
    variants = [{"name": name, "upstreams": [upstream], "weight": 1} for name in RATES]
    return {"routes": [{"name": ROUTE, "model": ROUTE, "variants": variants}]}


async def test_mean_reward_is_the_true_rate_while_rewards_arrive_before_the_wait(tmp_path, prometheus):
    up_port, router_port = free_port(), free_port()
    table_path = tmp_path / "routes.yaml"
    table_path.write_text(yaml.safe_dump(route_table(f"http://127.0.0.1:{up_port}")))
    env = {**os.environ, "MLROUTER_SIGNING_KEY": "rewards-live-traffic-signing-key-0123"}
    upstream_argv = [PYTHON, str(UPSTREAM_SCRIPT), "--port", str(up_port), "--name", "up"]
    router_argv = [PYTHON, "-m", "mlserving.cli", "route", "--config", str(table_path),
                   "--port", str(router_port), "--host", "127.0.0.1"]  # fmt: skip
    router_url = f"http://127.0.0.1:{router_port}"
    with (
        running(
            upstream_argv, tmp_path / "upstream.log", ready_url=f"http://127.0.0.1:{up_port}/v2/health/ready"
        ),
        running(router_argv, tmp_path / "router.log", env=env, ready_url=f"{router_url}/v2/health/live"),
    ):
        prometheus.set_targets([([f"127.0.0.1:{router_port}"], {})])
        traffic = Traffic(router_url)
        traffic.start()
        try:
            # every series exists and has been scraped before the experiment starts
            every = f'count_over_time(mlrouter_reward_sum{{route="{ROUTE}"}}[30s]) >= 2'
            wait_until(lambda: len(prometheus.query(every)) == len(RATES), timeout=30, interval=0.5)
            since = time.time()
            time.sleep(WAIT + 10)
            provider = PrometheusProvider(prometheus.url, timeout=5.0)
            try:
                read = await read_rewards(
                    provider,
                    route=ROUTE,
                    variants=list(RATES),
                    since=since,
                    now=time.time(),
                    reward_wait=WAIT,
                )
            finally:
                await provider.close()
        finally:
            traffic.stop.set()
            traffic.join(timeout=10)
    assert not traffic.errors, traffic.errors[:3]
    assert isinstance(read, dict), read
    for variant, rate in RATES.items():
        counts = read[variant]
        assert counts.requests > 100, counts
        assert counts.reward_sum / counts.requests == pytest.approx(rate, abs=0.06), counts
