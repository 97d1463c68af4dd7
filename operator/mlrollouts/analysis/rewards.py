"""Reward reader for experiments: per variant, feedback count, reward sum and request count, and
for unbounded (Gaussian) rewards the sum of squared rewards.

By default the numbers come from the router's metrics (``mlrouter_feedback_total``,
``mlrouter_reward_sum``, ``mlrouter_reward_sum_squares``, ``mlrouter_requests_total``, selected by
``route`` and grouped by ``variant``), as ``increase(...)`` over a window or since a start time.
Custom PromQL per variant (rendered with ``{{ variant }}`` and the other template variables) can
replace the reward sum, the sum of squares and the feedback count. ``increase`` extrapolates to the
window edges, so counts may be fractional.

``mlrouter_reward_sum`` is a gauge. Rewards in [0, 1] only make it grow, so ``increase`` reads it
like a counter and a router restart (a drop to 0) is corrected. Gaussian rewards may be negative:
a drop is then a negative reward, not a restart, so the sum is read with ``delta`` (last minus
first value, extrapolated like ``increase``), and a router restart inside the range is not
corrected. The sum of squares only grows, so ``increase`` is right for it in both cases.

With ``reward_wait`` the requests younger than the wait are left out (their reward may still come),
and so are the rewards and feedback: every router metric is read over the same range with the same
``offset``. A reward is credited after its request was made, so every reward counted belongs to a
request counted; the reward of a counted request that arrives after the range ends is counted by a
later reading. Counting the rewards up to now while the requests stop ``reward_wait`` earlier would
credit the newest requests' rewards without their requests and bias every mean upwards. Custom
queries get the same cut: they are evaluated ``reward_wait`` before the reading's time, over the
same range (``{{ interval }}``).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Mapping, Sequence
from dataclasses import dataclass

from mlrollouts.analysis.provider import MetricProvider
from mlrollouts.analysis.templates import prometheus_range, render
from mlrollouts.analysis.verdicts import NoValues, QueryError
from mlrollouts.api import QueryTemplateError
from mlrollouts.core.durations import parse_duration


@dataclass(frozen=True)
class VariantRewards:
    variant: str
    requests: float
    feedback: float
    reward_sum: float
    # Sum of squared rewards; read only for Gaussian rewards (``None`` otherwise).
    reward_sum_squares: float | None = None

    @property
    def mean(self) -> float | None:
        """Mean reward per feedback, or ``None`` before any feedback."""
        return self.reward_sum / self.feedback if self.feedback > 0 else None


def _window(window: str | float | None, since: float | None, now: float | None) -> str:
    if (window is None) == (since is None):
        raise ValueError("give exactly one of window or since")
    if since is not None:
        if now is None:
            raise ValueError("since needs now (the evaluation time, Unix seconds)")
        # Whole seconds, rounded up so the range covers the start.
        return prometheus_range(max(1, math.ceil(now - since)))
    assert window is not None
    return prometheus_range(window)


def _seconds(duration: str | float | None) -> float:
    """Seconds in a duration or a number of seconds; none is 0."""
    if duration is None or duration in ("0", 0):
        return 0.0
    if isinstance(duration, str):
        return parse_duration(duration)
    if isinstance(duration, bool) or not math.isfinite(duration) or duration < 0:
        raise ValueError(f"invalid duration {duration!r}: must be a positive number of seconds")
    return float(duration)


def _route_selector(route: str) -> str:
    return 'route="' + route.replace("\\", "\\\\").replace('"', '\\"') + '"'


Settled = tuple[str, str] | None
"""The range and the offset (``""`` or `` offset 30s``) of the requests old enough to count, or
``None`` while none is."""


def _settled(rng: str, wait: float, since: float | None, now: float | None) -> Settled:
    if wait <= 0:
        return rng, ""
    if since is not None and now is not None:
        span = now - wait - since
        if span < 1:
            return None
        rng = prometheus_range(math.ceil(span))
    return rng, f" offset {prometheus_range(wait)}"


def _router_query(route: str, metric: str, settled: Settled, function: str = "increase") -> str:
    selector = _route_selector(route)
    if settled is None:
        # Every request is younger than reward_wait: none counts yet (0 for each variant).
        return f"sum by (variant) ({metric}{{{selector}}}) * 0"
    rng, offset = settled
    return f"sum by (variant) ({function}({metric}{{{selector}}}[{rng}]{offset}))"


def _requests_query(route: str, rng: str, wait: float, since: float | None, now: float | None) -> str:
    return _router_query(route, "mlrouter_requests_total", _settled(rng, wait, since, now))


async def _by_variant(
    provider: MetricProvider, query: str, at: float | None
) -> dict[str, float] | QueryError:
    samples = await provider.query_vector(query, at)
    if isinstance(samples, QueryError):
        return samples
    out: dict[str, float] = {}
    for sample in samples:
        if math.isfinite(sample.value):
            variant = sample.labels.get("variant", "")
            out[variant] = out.get(variant, 0.0) + sample.value
    return out


async def _zeros(variants: Sequence[str]) -> dict[str, float]:
    return dict.fromkeys(variants, 0.0)


async def _per_variant_custom(
    provider: MetricProvider,
    template: str,
    variants: Sequence[str],
    variables: Mapping[str, str | None],
    at: float | None,
) -> dict[str, float] | QueryError:
    queries = [render(template, {**variables, "variant": v}) for v in variants]
    outcomes = await asyncio.gather(*(provider.query(q, at) for q in queries))
    out: dict[str, float] = {}
    for variant, outcome in zip(variants, outcomes, strict=True):
        if isinstance(outcome, QueryError):
            return QueryError(f"variant {variant!r}: {outcome.reason}")
        # No values yet (no feedback) counts as 0 for a cumulative reward.
        out[variant] = 0.0 if isinstance(outcome, NoValues) else outcome
    return out


async def read_rewards(
    provider: MetricProvider,
    *,
    route: str,
    variants: Sequence[str],
    window: str | float | None = None,
    since: float | None = None,
    now: float | None = None,
    reward_query: str | None = None,
    feedback_query: str | None = None,
    variables: Mapping[str, str | None] | None = None,
    reward_wait: str | float | None = None,
    gaussian: bool = False,
    reward_squares_query: str | None = None,
) -> dict[str, VariantRewards] | QueryError:
    """Rewards per variant over ``window`` (a duration) or ``since`` a Unix time up to ``now``.

    ``reward_query``/``feedback_query``/``reward_squares_query`` are custom per-variant templates
    (``{{ variant }}``, ``{{ interval }}`` and the others in ``variables``); a template error or a
    failed query gives a :class:`QueryError` naming it. Variants without any data read as zeros.
    With ``gaussian`` the rewards may be negative (the sum is read with ``delta``) and each variant's
    ``reward_sum_squares`` is read too; a custom ``reward_query`` then needs ``reward_squares_query``.
    """
    if gaussian and reward_query and not reward_squares_query:
        return QueryError(
            "Gaussian rewards from a custom reward query need a second query for the per-variant sum "
            "of squared rewards; the router's feedback metrics have it"
        )
    try:
        rng = _window(window, since, now)
        settled = _settled(rng, _seconds(reward_wait), since, now)
    except ValueError as exc:
        return QueryError(str(exc))
    at = now
    # Custom queries cannot take an offset: with reward_wait they are evaluated reward_wait earlier
    # over the settled range, which reads the same samples as the router queries' range and offset.
    wait = _seconds(reward_wait)
    custom_at = at if wait <= 0 else (time.time() if at is None else at) - wait
    custom_range = rng if settled is None else settled[0]
    base: dict[str, str | None] = {"name": route, **(variables or {}), "interval": custom_range}

    def custom(template: str) -> Awaitable[dict[str, float] | QueryError]:
        if settled is None:  # every request is younger than reward_wait: nothing counts yet
            return _zeros(variants)
        return _per_variant_custom(provider, template, variants, base, custom_at)

    def router_query(metric: str, function: str = "increase") -> str:
        return _router_query(route, metric, settled, function)

    reward_task = (
        custom(reward_query)
        if reward_query
        else _by_variant(
            provider, router_query("mlrouter_reward_sum", "delta" if gaussian else "increase"), at
        )
    )
    squares_task = None
    if gaussian:
        squares_task = (
            custom(reward_squares_query)
            if reward_squares_query
            else _by_variant(provider, router_query("mlrouter_reward_sum_squares"), at)
        )
    feedback_task = (
        custom(feedback_query)
        if feedback_query
        else _by_variant(provider, router_query("mlrouter_feedback_total"), at)
    )
    tasks = [reward_task, feedback_task, _by_variant(provider, router_query("mlrouter_requests_total"), at)]
    if squares_task is not None:
        tasks.append(squares_task)
    try:
        outcomes = await asyncio.gather(*tasks)
    except QueryTemplateError as exc:
        return QueryError(f"reward query: {exc}")
    names = ("reward", "feedback", "requests", "reward sum of squares")[: len(outcomes)]
    for what, outcome in zip(names, outcomes, strict=True):
        if isinstance(outcome, QueryError):
            return QueryError(f"{what}: {outcome.reason}")
    rewards, feedback, requests = outcomes[:3]
    squares = outcomes[3] if len(outcomes) > 3 else None
    assert isinstance(rewards, dict) and isinstance(feedback, dict) and isinstance(requests, dict)
    return {
        v: VariantRewards(
            variant=v,
            requests=requests.get(v, 0.0),
            feedback=feedback.get(v, 0.0),
            reward_sum=rewards.get(v, 0.0),
            reward_sum_squares=squares.get(v, 0.0) if isinstance(squares, dict) else None,
        )
        for v in variants
    }
