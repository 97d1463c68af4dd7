"""Check templates: the built-in PromQL queries, the ``{{ variable }}`` filling and PromQL ranges (pure).

Built-in templates read the metric names of the serving contract: server metrics are selected by
``model`` and ``revision``, router metrics by ``route`` (the resource name) and ``variant``.
A template is rendered once for the candidate and, when a check compares with stable, once more
with ``revision``/``variant`` set to the stable ones. The variables and their syntax are the API's
(:data:`mlrollouts.api.QUERY_VARIABLES`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from mlrollouts.api import fill_query
from mlrollouts.core.durations import parse_duration


def _escape_label_value(value: str) -> str:
    # Values land inside double-quoted PromQL strings; keep a stray quote from ending the string.
    return value.replace("\\", "\\\\").replace('"', '\\"')


def render(template: str, variables: Mapping[str, str | None]) -> str:
    """Fill in ``{{ name }}`` placeholders with PromQL-escaped values; raises
    :class:`mlrollouts.api.QueryTemplateError` for an unknown variable or one without a value."""
    escaped = {k: v if v is None or v == "" else _escape_label_value(str(v)) for k, v in variables.items()}
    return fill_query(template, escaped)


def prometheus_range(value: str | float) -> str:
    """A PromQL range for a duration or a number of seconds.

    A duration in whole units is kept as written (``1m``, ``1h30m``); anything else becomes whole
    seconds or milliseconds (``1.5m`` -> ``90s``, ``2.5`` -> ``2500ms``), which PromQL reads.
    """
    if isinstance(value, bool):
        raise ValueError(f"invalid duration {value!r}")
    if isinstance(value, str):
        seconds, kept = parse_duration(value), value.strip()
        if "." in kept:
            kept = ""
    else:
        seconds, kept = float(value), ""
        if not math.isfinite(seconds):
            raise ValueError(f"invalid duration {value!r}: must be a positive number of seconds")
    if seconds <= 0:
        raise ValueError(f"invalid duration {value!r}: must be longer than zero")
    if kept:
        return kept
    millis = round(seconds * 1000)
    return f"{millis // 1000}s" if millis % 1000 == 0 else f"{millis}ms"


@dataclass(frozen=True)
class Template:
    """A built-in check: a scalar query, or a distribution query for drift."""

    name: str
    query: str
    description: str
    distribution: bool = False


_SERVER = 'model="{{ model }}",revision="{{ revision }}"'
_ROUTER = 'route="{{ name }}",variant="{{ variant }}"'


def _latency(quantile: float) -> str:
    return (
        f"histogram_quantile({quantile}, sum by (le) "
        f"(rate(mlserving_request_duration_seconds_bucket{{{_SERVER}}}[{{{{ interval }}}}])))"
    )


BUILTIN_TEMPLATES: dict[str, Template] = {
    t.name: t
    for t in (
        Template(
            "error-rate",
            # A missing 5xx series means no errors, not "no values": fall back to 0.
            f'(sum(rate(mlserving_requests_total{{{_SERVER},code=~"5.."}}[{{{{ interval }}}}])) or vector(0))'
            f" / sum(rate(mlserving_requests_total{{{_SERVER}}}[{{{{ interval }}}}]))",
            "share of requests answered with a 5xx code (0..1)",
        ),
        Template("latency-p50", _latency(0.5), "median request duration in seconds"),
        Template("latency-p95", _latency(0.95), "95th percentile request duration in seconds"),
        Template("latency-p99", _latency(0.99), "99th percentile request duration in seconds"),
        Template(
            "request-rate",
            f"sum(rate(mlserving_requests_total{{{_SERVER}}}[{{{{ interval }}}}]))",
            "requests per second",
        ),
        Template(
            "prediction-drift",
            "sum by (output, bucket) "
            f"(increase(mlserving_predictions_total{{{_SERVER}}}[{{{{ interval }}}}]))",
            "population stability index of the candidate's prediction distribution against stable's",
            distribution=True,
        ),
        Template(
            "shadow-agreement",
            f'(sum(rate(mlrouter_shadow_agreement_total{{{_ROUTER},agree="true"}}[{{{{ interval }}}}]))'
            " or vector(0))"
            f" / sum(rate(mlrouter_shadow_agreement_total{{{_ROUTER}}}[{{{{ interval }}}}]))",
            "share of shadowed requests where the candidate agreed with the served prediction (0..1)",
        ),
        Template(
            "reward-rate",
            f"sum(rate(mlrouter_reward_sum{{{_ROUTER}}}[{{{{ interval }}}}]))"
            f" / sum(rate(mlrouter_feedback_total{{{_ROUTER}}}[{{{{ interval }}}}]))",
            "mean reward per feedback",
        ),
    )
}

SAMPLES_QUERY = f"sum(increase(mlserving_requests_total{{{_SERVER}}}[{{{{ interval }}}}]))"
"""Candidate requests in the window: the sample count that ``minSamples`` is compared with."""
