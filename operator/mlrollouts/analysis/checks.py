"""Running checks: a list of checks (``mlrollouts.api.Check``) plus a context in, one
:class:`CheckResult` per check out.

A check is a built-in ``template`` or a custom ``query`` with thresholds ``min``/``max`` and
``maxRatioToStable``, evaluated over ``window`` (default: the analysis ``interval``). For
``maxRatioToStable`` the same query is rendered a second time with ``revision``/``variant`` set to the
stable ones. ``prediction-drift`` compares the candidate's and the stable revision's prediction
distributions (PSI, worst output) and takes ``min``/``max`` only.

The API model validates a check; what it lets through and still cannot run (a drift check with
``maxRatioToStable``, a blank query) gives an ``Error`` result here.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from pydantic import ValidationError

from mlrollouts.analysis.provider import DEFAULT_TIMEOUT, MetricProvider, Sample, prometheus_provider
from mlrollouts.analysis.psi import drift_by_output, histograms_by_output
from mlrollouts.analysis.templates import BUILTIN_TEMPLATES, SAMPLES_QUERY, prometheus_range, render
from mlrollouts.analysis.verdicts import CheckResult, NoValues, QueryError, QueryOutcome, Thresholds, judge
from mlrollouts.api import Check, CheckTemplate, QueryTemplateError, format_validation_error
from mlrollouts.core.durations import parse_duration
from mlrollouts.core.verdicts import Verdict


class AnalysisConfigError(ValueError):
    """The analysis cannot run at all (no Prometheus address, an unusable timeout); the message
    names the field."""


def thresholds(check: Check) -> Thresholds:
    return Thresholds(check.min, check.max, check.max_ratio_to_stable)


def _as_check(raw: Any, where: str) -> Check | CheckResult:
    """An API check from a check, a mapping (camelCase or snake_case) or an object with its
    attributes; one that does not validate, or cannot run, becomes an ``Error`` result naming the field."""
    try:
        check = raw if isinstance(raw, Check) else Check.model_validate(raw, from_attributes=True)
    except ValidationError as exc:
        name = raw.get("name") if isinstance(raw, Mapping) else getattr(raw, "name", None)
        problems = "; ".join(_located(where, line) for line in format_validation_error(exc).splitlines())
        return _error(str(name or where), problems)
    problem = _cannot_run(check)
    return _error(check.name, f"{where} {check.name!r}.{problem}") if problem else check


def _located(where: str, problem: str) -> str:
    """A problem of the check (``min: ...``, or ``<root>: ...`` for the check as a whole) at ``where``."""
    whole = problem.removeprefix("<root>: ")
    return f"{where}: {whole}" if whole != problem else f"{where}.{problem}"


def _cannot_run(check: Check) -> str | None:
    """What keeps a valid check from running, as ``field: reason``."""
    if check.query is not None and not check.query.strip():
        return "query: the query is empty"
    if check.template is CheckTemplate.PREDICTION_DRIFT and check.max_ratio_to_stable is not None:
        return "maxRatioToStable: prediction-drift already compares with stable; use max"
    if check.window is not None:
        try:
            prometheus_range(check.window)
        except ValueError as exc:
            return f"window: {exc}"
    return None


@dataclass(frozen=True)
class AnalysisContext:
    """Who is analysed and where the metrics are.

    ``variant`` and ``stable_variant`` default to the revisions (a ModelDeployment's router variants
    are its revisions); router metrics are selected by ``route="<name>"``. ``provider`` overrides the
    Prometheus provider built from ``prometheus_address``/``prometheus_timeout``.
    """

    namespace: str
    name: str
    model: str
    revision: str
    stable_revision: str | None = None
    variant: str | None = None
    stable_variant: str | None = None
    interval: str | float = "1m"
    min_samples: int = 0
    prometheus_address: str | None = None
    prometheus_timeout: float = DEFAULT_TIMEOUT
    provider: MetricProvider | None = None

    def variables(self, window: str, stable: bool = False) -> dict[str, str | None]:
        """Template variables; with ``stable=True`` ``revision``/``variant`` are the stable ones."""
        revision = self.stable_revision if stable else self.revision
        variant = (self.stable_variant or self.stable_revision) if stable else (self.variant or self.revision)
        return {
            "namespace": self.namespace,
            "name": self.name,
            "model": self.model,
            "revision": revision,
            "stable_revision": self.stable_revision,
            "variant": variant,
            "interval": window,
        }

    def metric_provider(self) -> MetricProvider:
        if self.provider is not None:
            return self.provider
        if not self.prometheus_address:
            raise AnalysisConfigError("analysis.prometheus.address: no Prometheus address configured")
        try:
            return prometheus_provider(self.prometheus_address, self.prometheus_timeout)
        except ValueError as exc:
            raise AnalysisConfigError(f"analysis.prometheus: {exc}") from None

    @classmethod
    def from_spec(
        cls,
        analysis: Any,
        *,
        namespace: str,
        name: str,
        model: str,
        revision: str,
        stable_revision: str | None = None,
        default_prometheus_address: str | None = None,
        **overrides: Any,
    ) -> AnalysisContext:
        """Build from an analysis spec (API model or mapping with ``interval``, ``minSamples``,
        ``prometheus.address``, ``prometheus.timeout``); the operator default fills a missing address.
        Raises :class:`AnalysisConfigError` naming the field for an unreadable timeout."""

        def get(obj: Any, *keys: str) -> Any:
            for key in keys:
                value = obj.get(key) if isinstance(obj, Mapping) else getattr(obj, key, None)
                if value is not None:
                    return value
            return None

        prom = get(analysis, "prometheus") if analysis is not None else None
        interval = get(analysis, "interval") if analysis is not None else None
        min_samples = get(analysis, "min_samples", "minSamples") if analysis is not None else None
        timeout = get(prom, "timeout") if prom is not None else None
        if isinstance(timeout, str):
            try:
                timeout = parse_duration(timeout)
            except ValueError as exc:
                raise AnalysisConfigError(f"analysis.prometheus.timeout: {exc}") from None
            if timeout <= 0:
                raise AnalysisConfigError(f"analysis.prometheus.timeout: {timeout}s must be longer than zero")
        if interval is not None and hasattr(interval, "total_seconds"):
            interval = interval.total_seconds()
        return cls(
            namespace=namespace,
            name=name,
            model=model,
            revision=revision,
            stable_revision=stable_revision,
            interval=interval if interval is not None else "1m",
            min_samples=int(min_samples or 0),
            prometheus_address=(get(prom, "address") if prom is not None else None)
            or default_prometheus_address,
            prometheus_timeout=float(timeout) if timeout is not None else DEFAULT_TIMEOUT,
            **overrides,
        )


def _error(name: str, message: str, query: str = "") -> CheckResult:
    return CheckResult(name, Verdict.ERROR, query=query, message=message)


class _Run:
    """One analysis run: shares the sample-count query between checks with the same window."""

    def __init__(self, context: AnalysisContext, provider: MetricProvider, at: float | None) -> None:
        self.context = context
        self.at = at
        self.provider = provider
        self._samples: dict[str, asyncio.Task[QueryOutcome]] = {}

    def samples(self, window: str) -> asyncio.Task[QueryOutcome]:
        task = self._samples.get(window)
        if task is None:
            query = render(SAMPLES_QUERY, self.context.variables(window))
            task = self._samples[window] = asyncio.ensure_future(self._count(query))
        return task

    async def _count(self, query: str) -> QueryOutcome:
        outcome = await self.provider.query(query, self.at)
        # No request series at all means no requests: that is a count of 0, not a missing value.
        return 0.0 if isinstance(outcome, NoValues) else outcome

    async def check(self, spec: Check) -> CheckResult:
        window = prometheus_range(spec.window if spec.window is not None else self.context.interval)
        if spec.template is CheckTemplate.PREDICTION_DRIFT:
            return await self._drift(spec, window)
        return await self._scalar(spec, window)

    def _judged(
        self,
        spec: Check,
        window: str,
        measured: tuple[QueryOutcome, QueryOutcome, str],
        stable: QueryOutcome | None = None,
        stable_query: str | None = None,
        note: str = "",
    ) -> CheckResult:
        """The verdict on what was ``measured`` (value, samples, query); ``note`` is added to the
        message of a pass or a fail."""
        value, samples, query = measured
        result = judge(
            spec.name,
            thresholds(spec),
            value,
            samples=samples,
            min_samples=self.context.min_samples,
            stable=stable,
            query=query,
            stable_query=stable_query,
            window=window,
            unit="s" if spec.template and spec.template.startswith("latency-") else "",
        )
        if note and result.verdict in (Verdict.PASS, Verdict.FAIL):
            result = replace(result, message=f"{result.message} ({note})")
        return result

    async def _scalar(self, spec: Check, window: str) -> CheckResult:
        """The candidate's value and, for ``maxRatioToStable``, the stable revision's."""
        text = BUILTIN_TEMPLATES[spec.template].query if spec.template else spec.query
        assert text is not None
        try:
            query = render(text, self.context.variables(window))
        except QueryTemplateError as exc:
            return _error(spec.name, f"query: {exc}", text)
        stable_query: str | None = None
        if spec.max_ratio_to_stable is not None and self.context.stable_revision:
            try:
                stable_query = render(text, self.context.variables(window, stable=True))
            except QueryTemplateError as exc:
                return _error(spec.name, f"stable query: {exc}", query)

        async def no_stable() -> QueryOutcome:
            return NoValues("no stable revision to compare with")

        value, stable, samples = await asyncio.gather(
            self.provider.query(query, self.at),
            self.provider.query(stable_query, self.at) if stable_query else no_stable(),
            self.samples(window),
        )
        compared = stable if spec.max_ratio_to_stable is not None else None
        return self._judged(spec, window, (value, samples, query), compared, stable_query)

    async def _drift(self, spec: Check, window: str) -> CheckResult:
        """The PSI between the candidate's and the stable revision's prediction distributions."""
        text = BUILTIN_TEMPLATES[CheckTemplate.PREDICTION_DRIFT].query
        query = render(text, self.context.variables(window))
        samples_task = self.samples(window)
        if not self.context.stable_revision:
            no_stable = NoValues("no stable revision to compare with")
            return self._judged(spec, window, (no_stable, await samples_task, query))
        stable_query = render(text, self.context.variables(window, stable=True))
        cand, stab, samples = await asyncio.gather(
            self.provider.query_vector(query, self.at),
            self.provider.query_vector(stable_query, self.at),
            samples_task,
        )
        if isinstance(cand, QueryError):
            failed = QueryError(f"candidate distribution: {cand.reason}")
            return self._judged(spec, window, (failed, samples, query), stable_query=stable_query)
        if isinstance(stab, QueryError):
            failed = QueryError(f"stable distribution: {stab.reason}")
            return self._judged(spec, window, (failed, samples, query), stable_query=stable_query)
        value, detail = _psi_outcome(cand, stab)
        note = f"PSI {detail}" if detail else ""
        return self._judged(spec, window, (value, samples, query), stable_query=stable_query, note=note)


def _psi_outcome(candidate: list[Sample], stable: list[Sample]) -> tuple[QueryOutcome, str]:
    cand = histograms_by_output((s.labels, s.value) for s in candidate)
    stab = histograms_by_output((s.labels, s.value) for s in stable)
    if not any(sum(v for v in h.values() if v > 0) > 0 for h in cand.values()):
        return NoValues("the candidate made no predictions in the window"), ""
    if not any(sum(v for v in h.values() if v > 0) > 0 for h in stab.values()):
        return NoValues("the stable revision made no predictions in the window"), ""
    per_output = drift_by_output(cand, stab)
    if not per_output:
        return NoValues("candidate and stable have no prediction output in common"), ""
    worst = max(per_output, key=lambda k: per_output[k])
    detail = ", ".join(f"{out or '-'}={psi:.4g}" for out, psi in per_output.items())
    return per_output[worst], f"by output: {detail}"


async def run_checks(
    checks: Iterable[Any], context: AnalysisContext, at: float | None = None
) -> list[CheckResult]:
    """Evaluate all checks concurrently; one result per check, in order. Never raises for bad input
    or a failing Prometheus: those become ``Error`` results naming the field or the cause.

    ``at`` (Unix seconds) evaluates every query at that instant instead of Prometheus' "now", so a run
    scheduled for a given time measures that time's window even when it executes late."""
    specs = [_as_check(raw, f"checks[{index}]") for index, raw in enumerate(checks)]
    try:
        prometheus_range(context.interval)
    except ValueError as exc:
        return [
            s if isinstance(s, CheckResult) else _error(s.name, f"analysis.interval: {exc}") for s in specs
        ]
    try:
        provider = context.metric_provider()
    except AnalysisConfigError as exc:
        return [s if isinstance(s, CheckResult) else _error(s.name, str(exc)) for s in specs]
    run = _Run(context, provider, at)

    async def evaluate(item: Check | CheckResult) -> CheckResult:
        if isinstance(item, CheckResult):
            return item
        try:
            return await run.check(item)
        except Exception as exc:  # a bug must not turn into a pass, nor stop the other checks
            return _error(item.name, f"check failed unexpectedly: {exc!r}")

    return list(await asyncio.gather(*(evaluate(s) for s in specs)))
