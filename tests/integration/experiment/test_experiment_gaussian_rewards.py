"""Gaussian rewards through the Experiment controller's observation and pass: a real Prometheus
scrapes exporter processes that play the router's feedback metrics of two variants with unbounded
rewards (one variant's rewards all negative); the controller reads them since the experiment's start
and the pass turns them into means, intervals and a split."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime, timedelta

import pytest

from mlrollouts.api.experiment import Experiment, ExperimentPhase, ExperimentStatus
from mlrollouts.controller.config import OperatorConfig
from mlrollouts.controller.experiment import observe_metrics
from mlrollouts.experiment.plan import ExperimentObservation, VariantTarget, plan
from support import require_binary, wait_until
from support.exporters import serving_exporter

pytestmark = pytest.mark.integration

NAME = "revenue"
# rewards given in turn: "up" has mean 1 and variance 4, "down" mean -3 and variance 1
REWARDS = {"up": [3.0, -1.0], "down": [-2.0, -4.0]}


def experiment() -> Experiment:
    return Experiment.model_validate(
        {
            "apiVersion": "mlrollouts.io/v1alpha1",
            "kind": "Experiment",
            "metadata": {"name": NAME, "namespace": "ml", "uid": "u-rev", "generation": 1},
            "spec": {
                "variants": [{"name": v, "modelDeployment": f"md-{v}"} for v in REWARDS],
                "policy": {"type": "ThompsonSampling", "floor": 10, "maxWeightChange": 30, "seed": 5},
                "interval": "2s",
                "reward": {"source": "Feedback", "distribution": "Gaussian"},
                "decision": {"minSamplesPerVariant": 10000},
            },
        }
    )


async def test_controller_reads_gaussian_rewards_and_the_pass_uses_them(tmp_path, prometheus):
    require_binary("prometheus")
    targets = {v: VariantTarget(v, f"md-{v}", model=NAME, revision=f"r-{v}") for v in REWARDS}
    with contextlib.ExitStack() as stack:
        exporters = [
            stack.enter_context(
                serving_exporter(
                    tmp_path,
                    model=NAME,
                    revision=f"r-{v}",
                    route=NAME,
                    variant=v,
                    rps=40,
                    feedback_ratio=1.0,
                    rewards=rewards,
                )
            )
            for v, rewards in REWARDS.items()
        ]
        prometheus.set_targets([([e.target for e in exporters], {})])
        full = f'count_over_time(mlrouter_reward_sum_squares{{route="{NAME}"}}[10s]) >= 7'
        wait_until(
            lambda: len(prometheus.query(full)) == len(REWARDS),
            timeout=60,
            interval=0.5,
            message="7 scrapes of every exporter",
        )
        now = datetime.now(UTC)
        exp = experiment()
        first = plan(exp, ExperimentObservation(targets=targets), now - timedelta(seconds=6))
        assert first.status.phase is ExperimentPhase.RUNNING
        stored = first.status.model_dump(mode="json", by_alias=True, exclude_none=True)
        exp = exp.model_copy(update={"status": ExperimentStatus.model_validate(stored)})

        config = OperatorConfig(prometheus_url=prometheus.url)
        rewards, guardrails = await observe_metrics(exp, targets, now, config)

    assert isinstance(rewards, dict), rewards
    up, down = rewards["up"], rewards["down"]
    assert up.feedback == pytest.approx(240, rel=0.35)
    assert down.reward_sum / down.feedback == pytest.approx(-3.0, abs=0.3)
    assert down.reward_sum_squares / down.feedback == pytest.approx(10.0, abs=1.0)
    assert up.reward_sum_squares / up.feedback == pytest.approx(5.0, abs=0.8)

    decided = plan(exp, ExperimentObservation(targets=targets, rewards=rewards, guardrails=guardrails), now)
    assert decided.status.phase is ExperimentPhase.RUNNING, decided.status.message
    stats = {v.name: v for v in decided.status.variants}
    assert stats["up"].mean == pytest.approx(1.0, abs=0.15)
    assert stats["down"].mean == pytest.approx(-3.0, abs=0.3)
    assert stats["down"].interval is not None
    assert stats["down"].interval.low < stats["down"].mean < stats["down"].interval.high < 0
    assert stats["up"].probability_to_be_best > 0.99
    assert decided.weights["up"] > decided.weights["down"]
