"""What an Experiment's status says is written for people: whole request counts, variant names as
words."""

from __future__ import annotations

from datetime import timedelta

from test_experiment_plan import T0, observe, rewards, started, step

from mlrollouts.experiment.plan import RewardCounts


def test_counts_extrapolated_by_prometheus_are_shown_as_whole_requests():
    exp = started()
    counts = {n: RewardCounts(253.14, 180.6, 120.3) for n in ("a", "b", "c")}
    _, decided = step(exp, observe(counts), T0 + timedelta(seconds=10))
    for variant in decided.status.variants:
        assert variant.requests == 253 and variant.reward_count == 181, variant
    stored = decided.status.model_dump(mode="json", by_alias=True)
    assert {v["requests"] for v in stored["variants"]} == {253}


def test_the_message_names_variants_without_python_syntax():
    exp = started()
    _, decided = step(exp, observe(rewards({"a": 0.1, "b": 0.2, "c": 0.9}, 150)), T0 + timedelta(seconds=10))
    message = decided.status.message or ""
    assert "variants a, b, c have fewer than 200 samples" in message, message
    assert not any(ch in message for ch in "[]'"), message
