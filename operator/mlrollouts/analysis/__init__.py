"""Metric analysis: check templates, a Prometheus metric provider, verdicts and experiment rewards.

Only this package talks to Prometheus. Entry points: :func:`run_checks` (one :class:`CheckResult`
per check, concurrently) and :func:`read_rewards` (per-variant rewards for experiments).
"""

from mlrollouts.analysis.checks import AnalysisContext, CheckSpec, CheckSpecError, run_checks
from mlrollouts.analysis.provider import MetricProvider, PrometheusProvider, Sample, prometheus_provider
from mlrollouts.analysis.psi import population_stability_index
from mlrollouts.analysis.rewards import VariantRewards, read_rewards
from mlrollouts.analysis.templates import (
    BUILTIN_TEMPLATES,
    TEMPLATE_VARIABLES,
    TemplateError,
    parse_duration,
    render,
    template_variables,
)
from mlrollouts.analysis.verdicts import (
    CheckResult,
    NoValues,
    Outcome,
    QueryError,
    Thresholds,
    Verdict,
    judge,
)

__all__ = [
    "BUILTIN_TEMPLATES",
    "TEMPLATE_VARIABLES",
    "AnalysisContext",
    "CheckResult",
    "CheckSpec",
    "CheckSpecError",
    "MetricProvider",
    "NoValues",
    "Outcome",
    "PrometheusProvider",
    "QueryError",
    "Sample",
    "TemplateError",
    "Thresholds",
    "VariantRewards",
    "Verdict",
    "judge",
    "parse_duration",
    "population_stability_index",
    "prometheus_provider",
    "read_rewards",
    "render",
    "run_checks",
    "template_variables",
]
