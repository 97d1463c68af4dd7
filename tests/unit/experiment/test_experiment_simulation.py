"""The benchmark's simulation on one seed: the adaptive policy earns more than a fixed split."""

from __future__ import annotations

import argparse

from bench.bench_bandits import BEST, TOTAL, run_one
from mlrollouts.experiment import FixedPolicy, ThompsonSamplingPolicy


def test_thompson_sampling_loses_far_less_reward_than_a_fixed_split_and_picks_the_best_arm():
    args = argparse.Namespace(floor=0.01, max_step=0.2, draws=2000)
    fixed = run_one(FixedPolicy(), 0, args)
    thompson = run_one(ThompsonSamplingPolicy(), 0, args)
    assert thompson["regret"] < 0.35 * fixed["regret"], (thompson, fixed)
    requests, winner = thompson["bayes"]
    assert winner == BEST and requests <= TOTAL
