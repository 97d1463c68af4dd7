"""Checks against a real Prometheus scraping real exporter processes (one per revision).

One Prometheus and one exporter per revision are shared by the module: model ``fraud``, stable
revision ``s1`` with 2 % errors, 20 ms latency and predictions a=0.7/b=0.3; the other revisions
differ from it in one respect each. Scrape interval 1 s, windows of 10 s.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from mlrollouts.analysis import AnalysisContext, read_rewards, run_checks
from mlrollouts.analysis.provider import PrometheusProvider
from mlrollouts.api import Check
from mlrollouts.core.verdicts import Verdict
from support import PYTHON, free_port, running, wait_until
from support.exporters import Exporter, serving_exporter
from support.prometheus import PrometheusServer

pytestmark = pytest.mark.integration

MODEL = "fraud"
WINDOW = "10s"
STABLE = dict(rps=40, error_ratio=0.02, latency=0.02, predictions="a=0.7,b=0.3")
REVISIONS = {
    "s1": dict(STABLE, route=MODEL, feedback_ratio=0.5, reward_mean=0.1),
    "good": dict(STABLE, route=MODEL, feedback_ratio=0.5, reward_mean=0.3, shadow_agreement=0.98),
    "errors": dict(STABLE, error_ratio=0.3),
    "slowtail": dict(STABLE, tail_ratio=0.03, tail_latency=1.0),
    "idle": dict(STABLE, rps=0),
    "drift": dict(STABLE, predictions="a=0.3,b=0.7"),
    "live": dict(STABLE),
}

# The checks a careful user would put on a canary.
CANARY_CHECKS = [
    Check(name="errors", template="error-rate", max=0.05),
    Check(name="errors-vs-stable", template="error-rate", max_ratio_to_stable=2),
    Check(name="p50", template="latency-p50", max=0.1),
    Check(name="p95", template="latency-p95", max=0.1),
    Check(name="p99", template="latency-p99", max=0.25),
    Check(name="p99-vs-stable", template="latency-p99", max_ratio_to_stable=1.5),
    Check(name="traffic", template="request-rate", min=10),
    Check(name="drift", template="prediction-drift", max=0.1),
]


@dataclass
class Lab:
    prometheus: PrometheusServer
    exporters: dict[str, Exporter]


@pytest.fixture(scope="module")
def lab(tmp_path_factory) -> Iterator[Lab]:
    workdir = tmp_path_factory.mktemp("analysis-lab")
    prometheus = PrometheusServer(workdir / "prometheus", scrape_interval="1s")
    with contextlib.ExitStack() as stack:
        exporters = {}
        for revision, settings in REVISIONS.items():
            settings = dict(settings)
            route = settings.pop("route", None)
            exporters[revision] = stack.enter_context(
                serving_exporter(workdir, model=MODEL, revision=revision, route=route, **settings)
            )
        prometheus.start()
        stack.callback(prometheus.stop)
        prometheus.set_targets([([e.target for e in exporters.values()], {})])
        # Every series older than the window, so rate()/increase() see a full window of data.
        query = f'count_over_time(mlserving_requests_total{{model="{MODEL}",code="200"}}[20s]) >= 13'
        wait_until(
            lambda: len(prometheus.query(query)) == len(REVISIONS),
            timeout=60,
            interval=0.5,
            message="13 scrapes of every exporter",
        )
        yield Lab(prometheus, exporters)


def context(url: str, revision: str, **kw) -> AnalysisContext:
    base = dict(
        namespace="ml",
        name=MODEL,
        model=MODEL,
        revision=revision,
        stable_revision="s1",
        interval=WINDOW,
        min_samples=50,
        prometheus_address=url,
        prometheus_timeout=5.0,
    )
    base.update(kw)
    return AnalysisContext(**base)


def by_name(results):
    return {r.name: r for r in results}


async def test_good_candidate_passes_every_check(lab):
    results = by_name(await run_checks(CANARY_CHECKS, context(lab.prometheus.url, "good")))
    assert {name: r.verdict for name, r in results.items()} == dict.fromkeys(results, Verdict.PASS), {
        n: r.message for n, r in results.items()
    }
    assert results["errors"].value == pytest.approx(0.02, abs=0.01)
    assert results["errors-vs-stable"].stable_value == pytest.approx(0.02, abs=0.01)
    assert 'revision="s1"' in results["errors-vs-stable"].stable_query
    assert results["traffic"].value == pytest.approx(40, rel=0.25)
    assert results["drift"].value < 0.01
    assert results["p50"].samples == pytest.approx(400, rel=0.3)


async def test_high_error_rate_fails(lab):
    results = by_name(await run_checks(CANARY_CHECKS, context(lab.prometheus.url, "errors")))
    assert results["errors"].verdict is Verdict.FAIL
    assert results["errors"].value == pytest.approx(0.3, abs=0.05)
    assert "above max 0.05" in results["errors"].message
    assert results["errors-vs-stable"].verdict is Verdict.FAIL
    # Only the errors changed: latency checks still pass.
    assert results["p99"].verdict is Verdict.PASS


async def test_p99_only_latency_regression_fails(lab):
    results = by_name(await run_checks(CANARY_CHECKS, context(lab.prometheus.url, "slowtail")))
    assert results["p50"].verdict is Verdict.PASS
    assert results["p95"].verdict is Verdict.PASS
    assert results["p99"].verdict is Verdict.FAIL, results["p99"].message
    assert results["p99"].value > 0.5
    assert results["p99-vs-stable"].verdict is Verdict.FAIL
    assert results["errors"].verdict is Verdict.PASS


async def test_no_traffic_is_inconclusive_never_pass_or_fail(lab):
    results = await run_checks(CANARY_CHECKS, context(lab.prometheus.url, "idle"))
    assert {r.verdict for r in results} == {Verdict.INCONCLUSIVE}, [r.message for r in results]
    assert all(r.samples == 0 for r in results)
    assert "fewer than minSamples 50" in results[0].message
    # Without a minSamples gate the value queries speak for themselves: no requests is "no values".
    no_gate = by_name(await run_checks(CANARY_CHECKS, context(lab.prometheus.url, "idle", min_samples=0)))
    assert no_gate["errors"].verdict is Verdict.INCONCLUSIVE and "no values" in no_gate["errors"].message
    assert no_gate["p99"].verdict is Verdict.INCONCLUSIVE
    assert no_gate["traffic"].verdict is Verdict.FAIL  # a measured rate of 0 is below min 10


async def test_drift_detected_between_different_distributions_only(lab):
    drift = [Check(name="drift", template="prediction-drift", max=0.1)]
    [shifted] = await run_checks(drift, context(lab.prometheus.url, "drift"))
    [same] = await run_checks(drift, context(lab.prometheus.url, "good"))
    assert shifted.verdict is Verdict.FAIL
    assert shifted.value == pytest.approx(0.678, abs=0.1)  # 0.8 * ln(7/3) for 0.3/0.7 vs 0.7/0.3
    assert "label=" in shifted.message
    assert same.verdict is Verdict.PASS
    assert same.value < 0.01


async def test_custom_query_with_variables(lab):
    checks = [
        Check(
            name="ok-rate",
            query='sum(rate(mlserving_requests_total{model="{{ model }}",revision="{{ revision }}",code="200"}'
            "[{{ interval }}]))",
            min=20,
            max_ratio_to_stable=1.2,
        )
    ]
    [result] = await run_checks(checks, context(lab.prometheus.url, "good"))
    assert result.verdict is Verdict.PASS, result.message
    assert result.query.endswith('revision="good",code="200"}[10s]))')
    assert result.stable_value == pytest.approx(39.2, rel=0.25)


async def test_bad_queries_are_errors_with_the_reason(lab):
    checks = [
        Check(name="syntax", query="sum(rate(mlserving_requests_total[10s]", max=1),
        Check(name="several", query="rate(mlserving_requests_total[{{ interval }}])", max=1000),
        {"name": "unknown-var", "query": "sum(up{x='{{ color }}'})", "max": 1},
        Check(name="missing-metric", query="sum(no_such_metric_total)", max=1),
    ]
    results = by_name(await run_checks(checks, context(lab.prometheus.url, "good")))
    assert results["syntax"].verdict is Verdict.ERROR
    assert "HTTP 400 bad_data" in results["syntax"].message and "parse error" in results["syntax"].message
    assert results["several"].verdict is Verdict.ERROR and "series" in results["several"].message
    assert results["unknown-var"].verdict is Verdict.ERROR and "'color'" in results["unknown-var"].message
    assert results["missing-metric"].verdict is Verdict.INCONCLUSIVE
    assert "empty vector" in results["missing-metric"].message


async def test_shadow_agreement_and_reward_rate_from_router_metrics(lab):
    checks = [
        Check(name="agree", template="shadow-agreement", min=0.95),
        Check(name="strict-agree", template="shadow-agreement", min=0.99),
        Check(name="reward", template="reward-rate", min=0.2, max_ratio_to_stable=5),
    ]
    results = by_name(await run_checks(checks, context(lab.prometheus.url, "good")))
    assert results["agree"].verdict is Verdict.PASS
    assert results["agree"].value == pytest.approx(0.98, abs=0.02)
    assert results["strict-agree"].verdict is Verdict.FAIL
    assert results["reward"].verdict is Verdict.PASS, results["reward"].message
    assert results["reward"].value == pytest.approx(0.3, abs=0.1)
    assert results["reward"].stable_value == pytest.approx(0.1, abs=0.07)


async def test_reward_reader_per_variant(lab):
    provider = PrometheusProvider(lab.prometheus.url, timeout=5)
    rewards = await read_rewards(provider, route=MODEL, variants=["s1", "good", "absent"], window=WINDOW)
    assert isinstance(rewards, dict), rewards
    s1, good, absent = rewards["s1"], rewards["good"], rewards["absent"]
    assert s1.requests == pytest.approx(400, rel=0.3)
    assert s1.feedback == pytest.approx(s1.requests * 0.49, rel=0.2)  # 2 % errors get no feedback
    assert s1.mean == pytest.approx(0.1, abs=0.05)
    assert good.mean == pytest.approx(0.3, abs=0.07)
    assert (absent.requests, absent.feedback, absent.reward_sum, absent.mean) == (0, 0, 0, None)

    now = time.time()
    since = await read_rewards(provider, route=MODEL, variants=["good"], since=now - 5, now=now)
    assert since["good"].requests == pytest.approx(200, rel=0.35)

    custom = await read_rewards(
        provider,
        route=MODEL,
        variants=["s1", "good"],
        window=WINDOW,
        reward_query='sum(increase(mlrouter_reward_sum{route="{{ name }}",variant="{{ variant }}"}[{{ interval }}]))',
    )
    assert custom["good"].reward_sum == pytest.approx(rewards["good"].reward_sum, rel=0.3)

    # Requests younger than reward_wait are not counted (yet), and neither are their rewards.
    waited = await read_rewards(
        provider, route=MODEL, variants=["good"], since=now - 3, now=now, reward_wait="5s"
    )
    assert (waited["good"].requests, waited["good"].feedback, waited["good"].reward_sum) == (0, 0, 0)
    offset = await read_rewards(provider, route=MODEL, variants=["good"], window="5s", reward_wait="3s")
    assert offset["good"].requests == pytest.approx(200, rel=0.35)
    assert offset["good"].feedback == pytest.approx(offset["good"].requests * 0.5, rel=0.25)
    assert offset["good"].mean == pytest.approx(0.3, abs=0.07)
    # A custom reward query gets the same cut: evaluated reward_wait earlier over the same range.
    reward_sum = (
        'sum(increase(mlrouter_reward_sum{route="{{ name }}",variant="{{ variant }}"}[{{ interval }}]))'
    )
    later = time.time()
    custom_offset, router_offset = await asyncio.gather(
        read_rewards(
            provider,
            route=MODEL,
            variants=["good"],
            window="5s",
            now=later,
            reward_wait="3s",
            reward_query=reward_sum,
        ),
        read_rewards(provider, route=MODEL, variants=["good"], window="5s", now=later, reward_wait="3s"),
    )
    assert custom_offset["good"].reward_sum == pytest.approx(router_offset["good"].reward_sum, rel=0.05)
    custom_waited = await read_rewards(
        provider,
        route=MODEL,
        variants=["good"],
        since=now - 3,
        now=now,
        reward_wait="5s",
        reward_query=reward_sum,
    )
    assert custom_waited["good"].reward_sum == 0

    broken = await read_rewards(provider, route=MODEL, variants=["s1"], window=WINDOW, reward_query="sum(x{")
    assert hasattr(broken, "reason") and "reward" in broken.reason
    await provider.close()


async def test_candidate_changed_at_runtime_starts_failing(lab):
    checks = [Check(name="errors", template="error-rate", max=0.1)]
    [before] = await run_checks(checks, context(lab.prometheus.url, "live"))
    assert before.verdict is Verdict.PASS
    lab.exporters["live"].update(error_ratio=0.5)
    deadline = time.monotonic() + 30
    verdict = before.verdict
    while time.monotonic() < deadline and verdict is not Verdict.FAIL:
        [result] = await run_checks(checks, context(lab.prometheus.url, "live"))
        verdict = result.verdict
        if verdict is not Verdict.FAIL:
            await asyncio.sleep(0.5)
    assert verdict is Verdict.FAIL


async def test_checks_evaluated_at_a_given_time_see_that_window(lab):
    # An hour ago no exporter existed: no samples in that window, so inconclusive; now it passes.
    checks = [Check(name="errors", template="error-rate", max=0.1)]
    [past] = await run_checks(checks, context(lab.prometheus.url, "good"), at=time.time() - 3600)
    assert past.verdict is Verdict.INCONCLUSIVE and past.samples == 0
    [now] = await run_checks(checks, context(lab.prometheus.url, "good"), at=time.time())
    assert now.verdict is Verdict.PASS


async def test_a_burst_of_checks_queues_instead_of_timing_out(lab):
    # 3 queries per check, far more than the worker threads: all must be answered, none time out.
    checks = [
        Check(name=f"rate-{i}", template="request-rate", min=10, window=f"{10 + i % 5}s") for i in range(60)
    ]
    ctx = context(lab.prometheus.url, "good", prometheus_timeout=2.0)
    results = await run_checks(checks, ctx)
    assert [r.name for r in results] == [c.name for c in checks]
    assert {r.verdict for r in results} == {Verdict.PASS}, {r.message for r in results}


async def test_prometheus_stopped_gives_error_never_pass(lab, prometheus):
    """A second Prometheus scraping the good revision: Pass while it runs, Error once stopped."""
    prometheus.set_targets([([lab.exporters["good"].target], {})])
    prometheus.wait_for_series(f'count_over_time(mlserving_requests_total{{revision="good"}}[{WINDOW}]) >= 3')
    checks = [Check(name="errors", template="error-rate", max=0.05)]
    ctx = context(prometheus.url, "good", min_samples=10)
    [running_result] = await run_checks(checks, ctx)
    assert running_result.verdict is Verdict.PASS, running_result.message
    prometheus.stop()
    started = time.monotonic()
    [stopped] = await run_checks(checks, ctx)
    assert time.monotonic() - started < 5  # a refused connection is reported at once
    assert stopped.verdict is Verdict.ERROR
    assert "cannot reach Prometheus" in stopped.message and "refused" in stopped.message


HANGING_SERVER = """
import socket, sys, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen(16)
conns = []
print("listening", flush=True)
while True:
    c, _ = s.accept()
    conns.append(c)  # accept, never answer
"""


async def test_prometheus_that_does_not_answer_times_out_as_error(tmp_path):
    port = free_port()
    with running([PYTHON, "-c", HANGING_SERVER, str(port)], tmp_path / "hang.log") as proc:
        wait_until(lambda: "listening" in proc.output(), timeout=10, message="hanging server up")
        ctx = AnalysisContext(
            namespace="ml",
            name=MODEL,
            model=MODEL,
            revision="good",
            interval=WINDOW,
            prometheus_address=f"http://127.0.0.1:{port}",
            prometheus_timeout=1.0,
        )
        started = time.monotonic()
        [result] = await run_checks([Check(name="errors", template="error-rate", max=0.05)], ctx)
        took = time.monotonic() - started
    assert result.verdict is Verdict.ERROR
    assert "did not answer within 1s" in result.message
    assert took < 10  # bounded by the timeout, not by the server
