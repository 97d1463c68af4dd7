"""Metric analysis: check templates, a Prometheus metric provider, verdicts and experiment rewards.

Only this package talks to Prometheus. Entry points: :func:`run_checks` (one :class:`CheckResult`
per check, concurrently) and :func:`read_rewards` (per-variant rewards for experiments)::

    context = AnalysisContext.from_spec(
        spec.rollout.analysis,                # interval, minSamples, prometheus{address, timeout}
        namespace="ml", name="fraud", model="fraud",
        revision=candidate, stable_revision=stable,
        default_prometheus_address="http://prometheus.monitoring:9090",
    )
    results = await run_checks(spec.rollout.analysis.checks, context)
    status_history = [r.as_status() for r in results]   # verdict, value, stableValue, samples, query

Neither call raises for bad specs or an unhealthy Prometheus: those come back as ``Error`` results
whose message names the field or the cause. Verdict rules: :mod:`mlrollouts.analysis.verdicts`
(the verdicts themselves are :class:`mlrollouts.core.verdicts.Verdict`).
"""

from mlrollouts.analysis.checks import AnalysisConfigError, AnalysisContext, run_checks, thresholds
from mlrollouts.analysis.provider import MetricProvider, PrometheusProvider, Sample, prometheus_provider
from mlrollouts.analysis.psi import population_stability_index
from mlrollouts.analysis.rewards import VariantRewards, read_rewards
from mlrollouts.analysis.templates import BUILTIN_TEMPLATES, prometheus_range, render
from mlrollouts.analysis.verdicts import CheckResult, NoValues, QueryError, QueryOutcome, Thresholds, judge

__all__ = [
    "BUILTIN_TEMPLATES",
    "AnalysisConfigError",
    "AnalysisContext",
    "CheckResult",
    "MetricProvider",
    "NoValues",
    "PrometheusProvider",
    "QueryError",
    "QueryOutcome",
    "Sample",
    "Thresholds",
    "VariantRewards",
    "judge",
    "population_stability_index",
    "prometheus_provider",
    "prometheus_range",
    "read_rewards",
    "render",
    "run_checks",
    "thresholds",
]
