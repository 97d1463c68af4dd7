"""Check templates: the built-in PromQL queries and the ``{{ variable }}`` renderer (pure).

Built-in templates read the metric names of the serving contract: server metrics are selected by
``model`` and ``revision``, router metrics by ``route`` (the resource name) and ``variant``.
A template is rendered once for the candidate and, when a check compares with stable, once more
with ``revision``/``variant`` set to the stable ones.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass

TEMPLATE_VARIABLES: tuple[str, ...] = (
    "namespace",
    "name",
    "model",
    "revision",
    "stable_revision",
    "variant",
    "interval",
)
"""Variables a custom ``query`` may use, written ``{{ name }}``."""

_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
_PROM_DURATION = re.compile(r"^(?:\d+(?:ms|y|w|d|h|m|s))+$")
_DURATION = re.compile(r"^(?:\d+(?:\.\d+)?(?:ms|y|w|d|h|m|s))+$")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|y|w|d|h|m|s)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}


class TemplateError(ValueError):
    """A query template that cannot be rendered (unknown or unset variable, malformed placeholder)."""


def template_variables(template: str) -> list[str]:
    """The variable names a template uses, in order of first appearance.

    Raises :class:`TemplateError` for an unknown variable or a ``{{`` that is not a plain placeholder.
    """
    names: list[str] = []
    for match in _PLACEHOLDER.finditer(template):
        name = match.group(1)
        if name not in TEMPLATE_VARIABLES:
            raise TemplateError(
                f"unknown template variable {name!r} in query; "
                f"known variables: {', '.join(TEMPLATE_VARIABLES)}"
            )
        if name not in names:
            names.append(name)
    leftover = _PLACEHOLDER.sub("", template)
    if "{{" in leftover or "}}" in leftover:
        bad = leftover[max(0, leftover.find("{{")) :][:40]
        raise TemplateError(f"malformed placeholder near {bad!r}: write variables as {{{{ name }}}}")
    return names


def _escape_label_value(value: str) -> str:
    # Values land inside double-quoted PromQL strings; keep a stray quote from ending the string.
    return value.replace("\\", "\\\\").replace('"', '\\"')


def render(template: str, variables: Mapping[str, str | None]) -> str:
    """Substitute ``{{ name }}`` placeholders; every used variable must be known and have a value."""
    template_variables(template)

    def substitute(match: re.Match[str]) -> str:
        name = match.group(1)
        value = variables.get(name)
        if value is None or value == "":
            raise TemplateError(f"template variable {name!r} has no value for this resource")
        return _escape_label_value(str(value))

    return _PLACEHOLDER.sub(substitute, template)


def parse_duration(value: str | float | int) -> float:
    """Seconds in a Prometheus duration (``30s``, ``1m30s``) or a number of seconds."""
    if isinstance(value, bool):
        raise ValueError(f"invalid duration {value!r}")
    if isinstance(value, int | float):
        if not math.isfinite(value) or value <= 0:
            raise ValueError(f"invalid duration {value!r}: must be a positive number of seconds")
        return float(value)
    text = str(value).strip()
    if not _DURATION.match(text):
        raise ValueError(
            f"invalid duration {value!r}: expected a Prometheus duration such as 30s, 5m or 1m30s"
        )
    seconds = sum(float(n) * _UNIT_SECONDS[unit] for n, unit in _DURATION_PART.findall(text))
    if seconds <= 0:
        raise ValueError(f"invalid duration {value!r}: must be longer than zero")
    return float(seconds)


def format_duration(value: str | float | int) -> str:
    """A Prometheus range for ``value``: Prometheus durations are kept, others (seconds, ``1.5m``)
    become whole seconds or milliseconds."""
    if isinstance(value, str) and _PROM_DURATION.match(value.strip()):
        parse_duration(value)
        return value.strip()
    seconds = parse_duration(value)
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
