"""Bandit policies at the operator's cadence: regret and time to a correct conclusion.

A 3-arm Bernoulli experiment (reward rates 0.10, 0.12, 0.15) receives 20,000 requests; every 500
requests the experiment core recomputes the split from the cumulative counts, exactly as the
controller does every interval, and the next 500 requests are routed at random by those weights.
Each arm draws its rewards from its own pre-generated stream per seed, so every policy sees the
same luck. Regret is the expected reward lost against always serving the best arm:
``sum over arms of requests * (0.15 - rate)``.

Decisions are evaluated at every interval on the same data with the Bayesian rule (probability to
be best >= 0.95 and expected loss <= 0.001) and with the frequentist rule (Holm-corrected
always-valid mSPRT, alpha 0.05), both with at least 100 samples per variant; "requests to
conclusion" counts all requests up to the first interval at which the rule concluded.

    python tests/bench/bench_bandits.py [--seeds 200] [--draws 5000] [--floor 0.01] [--max-step 0.2]
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from mlrollouts.experiment import (
    BayesianRule,
    EpsilonGreedyPolicy,
    ExperimentSettings,
    FixedPolicy,
    FrequentistRule,
    ThompsonSamplingPolicy,
    UCB1Policy,
    VariantObservation,
    evaluate,
)

RATES = np.array([0.10, 0.12, 0.15])
NAMES = ["a", "b", "c"]
BEST = "c"
TOTAL = 20_000
BATCH = 500

POLICIES = {
    "Fixed split": FixedPolicy(),
    "epsilon-greedy (0.1)": EpsilonGreedyPolicy(epsilon=0.1),
    "UCB1": UCB1Policy(),
    "Thompson sampling": ThompsonSamplingPolicy(),
}


def run_one(policy, seed: int, args) -> dict[str, object]:
    rng = np.random.default_rng(seed)
    # Per-arm reward streams: the k-th request an arm serves gets the k-th reward of its stream.
    streams = rng.random((len(RATES), TOTAL)) < RATES[:, None]
    traffic = np.random.default_rng([seed, 1])
    requests = np.zeros(len(RATES), dtype=int)
    rewards = np.zeros(len(RATES))
    weights = {name: 1 / len(NAMES) for name in NAMES}
    common = {"policy": policy, "floor": args.floor, "max_step": args.max_step}
    bayes = ExperimentSettings(**common, posterior_draws=args.draws, decision=BayesianRule())
    frequentist = ExperimentSettings(**common, posterior_draws=100, decision=FrequentistRule())
    concluded: dict[str, tuple[int, str] | None] = {"bayes": None, "frequentist": None}
    for look in range(TOTAL // BATCH):
        share = np.array([weights[name] for name in NAMES])
        allocation = traffic.multinomial(BATCH, share / share.sum())
        for arm, count in enumerate(allocation):
            start = requests[arm]
            rewards[arm] += streams[arm, start : start + count].sum()
        requests += allocation
        observations = [
            VariantObservation(name, requests=int(n), reward_count=int(s), reward_sum=float(s))
            for name, n, s in zip(NAMES, requests, rewards, strict=True)
        ]
        result = evaluate(observations, weights, bayes, seed=[seed, look])
        weights = dict(result.weights)
        if concluded["bayes"] is None and result.decision.concluded:
            concluded["bayes"] = (int(requests.sum()), str(result.decision.winner))
        if concluded["frequentist"] is None:
            decision = evaluate(observations, weights, frequentist, seed=[seed, look]).decision
            if decision.concluded:
                concluded["frequentist"] = (int(requests.sum()), str(decision.winner))
    regret = float(np.sum(requests * (RATES.max() - RATES)))
    return {"regret": regret, **concluded}


def conclusion_columns(outcomes: list[tuple[int, str] | None], seeds: int) -> list[str]:
    done = [o for o in outcomes if o is not None]
    correct = [n for n, winner in done if winner == BEST]
    share_done = len(done) / seeds
    share_correct = len(correct) / len(done) if done else float("nan")
    median = f"{np.median(correct):,.0f}" if correct else "-"
    return [f"{share_done:.0%}", f"{share_correct:.1%}", median]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=200)
    parser.add_argument("--draws", type=int, default=5000, help="posterior Monte Carlo draws per evaluation")
    parser.add_argument("--floor", type=float, default=0.01)
    parser.add_argument("--max-step", type=float, default=0.2)
    args = parser.parse_args(argv)

    print(
        f"3-arm Bernoulli {RATES.tolist()}, {TOTAL:,} requests, split recomputed every {BATCH} requests, "
        f"{args.seeds} seeds, floor {args.floor}, max step {args.max_step}, {args.draws} posterior draws"
    )
    header = [
        "policy",
        "regret mean",
        "regret 90% interval",
        "vs fixed",
        "Bayes concl.",
        "Bayes correct",
        "Bayes median req.",
        "freq. concl.",
        "freq. correct",
        "freq. median req.",
    ]
    rows = []
    fixed_mean = None
    started = time.perf_counter()
    for label, policy in POLICIES.items():
        results = [run_one(policy, seed, args) for seed in range(args.seeds)]
        regret = np.array([r["regret"] for r in results])
        mean = float(regret.mean())
        fixed_mean = fixed_mean if fixed_mean is not None else mean
        low, high = np.percentile(regret, [5, 95])
        rows.append(
            [
                label,
                f"{mean:.1f}",
                f"[{low:.1f}, {high:.1f}]",
                f"{mean / fixed_mean:.0%}",
                *conclusion_columns([r["bayes"] for r in results], args.seeds),
                *conclusion_columns([r["frequentist"] for r in results], args.seeds),
            ]
        )
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    print(" | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
    print("-+-".join("-" * w for w in widths))
    for row in rows:
        print(" | ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)))
    print(
        "correct = share of concluded seeds whose winner is the 0.15 arm; median req. = median requests "
        "until a correct conclusion"
    )
    print(f"wall time {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
