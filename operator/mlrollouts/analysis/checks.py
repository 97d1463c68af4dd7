"""Running checks: a list of check specs plus a context in, one :class:`CheckResult` per check out.

A check is a built-in ``template`` or a custom ``query`` with thresholds ``min``/``max`` and
``maxRatioToStable``, evaluated over ``window`` (default: the analysis ``interval``). For
``maxRatioToStable`` the same query is rendered a second time with ``revision``/``variant`` set to the
stable ones. ``prediction-drift`` compares the candidate's and the stable revision's prediction
distributions (PSI, worst output) and takes ``min``/``max`` only.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from mlrollouts.analysis.provider import DEFAULT_TIMEOUT, MetricProvider, Sample, prometheus_provider
from mlrollouts.analysis.psi import drift_by_output, histograms_by_output
from mlrollouts.analysis.templates import (
    BUILTIN_TEMPLATES,
    SAMPLES_QUERY,
    TemplateError,
    format_duration,
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


class CheckSpecError(ValueError):
    """A check spec that cannot run; the message names the field."""


@dataclass(frozen=True)
class CheckSpec:
    name: str
    template: str | None = None
    query: str | None = None
    min: float | None = None
    max: float | None = None
    max_ratio_to_stable: float | None = None
    window: str | float | None = None

    @property
    def thresholds(self) -> Thresholds:
        return Thresholds(self.min, self.max, self.max_ratio_to_stable)

    @classmethod
    def from_any(cls, obj: Any) -> CheckSpec:
        """Accept a ``CheckSpec``, an API model (attributes) or a mapping, camelCase or snake_case."""
        if isinstance(obj, CheckSpec):
            return obj
        if hasattr(obj, "model_dump"):
            obj = obj.model_dump(by_alias=False, exclude_none=True)
        if not isinstance(obj, Mapping):
            obj = {k: getattr(obj, k) for k in dir(obj) if not k.startswith("_")}

        def get(*keys: str) -> Any:
            for key in keys:
                if obj.get(key) is not None:
                    return obj[key]
            return None

        return cls(
            name=str(get("name") or ""),
            template=str(get("template")) if get("template") is not None else None,
            query=get("query"),
            min=get("min"),
            max=get("max"),
            max_ratio_to_stable=get("max_ratio_to_stable", "maxRatioToStable"),
            window=get("window"),
        )

    def validate(self, where: str = "check") -> None:
        """Raise :class:`CheckSpecError` naming the field (``<where>.template``...) if it cannot run."""
        label = f"{where} {self.name!r}" if self.name else where
        if not self.name:
            raise CheckSpecError(f"{where}.name: a check needs a name")
        if (self.template is None) == (self.query is None):
            raise CheckSpecError(f"{label}: set exactly one of template or query")
        if self.template is not None and self.template not in BUILTIN_TEMPLATES:
            raise CheckSpecError(
                f"{label}.template: unknown template {self.template!r}; "
                f"built-in templates: {', '.join(BUILTIN_TEMPLATES)}"
            )
        if self.query is not None:
            if not self.query.strip():
                raise CheckSpecError(f"{label}.query: the query is empty")
            try:
                template_variables(self.query)
            except TemplateError as exc:
                raise CheckSpecError(f"{label}.query: {exc}") from None
        for field_name, value in (("min", self.min), ("max", self.max)):
            if value is not None and (isinstance(value, bool) or not math.isfinite(float(value))):
                raise CheckSpecError(f"{label}.{field_name}: must be a finite number, got {value!r}")
        if self.min is not None and self.max is not None and float(self.min) > float(self.max):
            raise CheckSpecError(f"{label}: min {self.min} is greater than max {self.max}")
        ratio = self.max_ratio_to_stable
        if ratio is not None and (isinstance(ratio, bool) or not (float(ratio) > 0 and math.isfinite(ratio))):
            raise CheckSpecError(f"{label}.maxRatioToStable: must be a positive number, got {ratio!r}")
        if self.template == "prediction-drift" and ratio is not None:
            raise CheckSpecError(
                f"{label}.maxRatioToStable: prediction-drift already compares with stable; use max"
            )
        if self.window is not None:
            try:
                format_duration(self.window)
            except ValueError as exc:
                raise CheckSpecError(f"{label}.window: {exc}") from None


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
            raise CheckSpecError("analysis.prometheus.address: no Prometheus address configured")
        try:
            return prometheus_provider(self.prometheus_address, self.prometheus_timeout)
        except ValueError as exc:
            raise CheckSpecError(f"analysis.prometheus: {exc}") from None

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
        Raises :class:`CheckSpecError` naming the field for an unreadable timeout."""

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
                raise CheckSpecError(f"analysis.prometheus.timeout: {exc}") from None
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
    return CheckResult(
        name=name,
        verdict=Verdict.ERROR,
        value=None,
        stable_value=None,
        samples=None,
        query=query,
        message=message,
    )


class _Run:
    """One analysis run: shares the sample-count query between checks with the same window."""

    def __init__(self, context: AnalysisContext, provider: MetricProvider, at: float | None) -> None:
        self.context = context
        self.at = at
        self.provider = provider
        self._samples: dict[str, asyncio.Task[Outcome]] = {}

    def samples(self, window: str) -> asyncio.Task[Outcome]:
        task = self._samples.get(window)
        if task is None:
            query = render(SAMPLES_QUERY, self.context.variables(window))
            task = self._samples[window] = asyncio.ensure_future(self._count(query))
        return task

    async def _count(self, query: str) -> Outcome:
        outcome = await self.provider.query(query, self.at)
        # No request series at all means no requests: that is a count of 0, not a missing value.
        return 0.0 if isinstance(outcome, NoValues) else outcome

    async def check(self, spec: CheckSpec) -> CheckResult:
        window = format_duration(spec.window if spec.window is not None else self.context.interval)
        if spec.template == "prediction-drift":
            return await self._drift(spec, window)
        text = BUILTIN_TEMPLATES[spec.template].query if spec.template else spec.query
        assert text is not None
        try:
            query = render(text, self.context.variables(window))
        except TemplateError as exc:
            return _error(spec.name, f"query: {exc}", text)
        stable_query: str | None = None
        if spec.max_ratio_to_stable is not None and self.context.stable_revision:
            try:
                stable_query = render(text, self.context.variables(window, stable=True))
            except TemplateError as exc:
                return _error(spec.name, f"stable query: {exc}", query)

        async def no_stable() -> Outcome:
            return NoValues("no stable revision to compare with")

        value, stable, samples = await asyncio.gather(
            self.provider.query(query, self.at),
            self.provider.query(stable_query, self.at) if stable_query else no_stable(),
            self.samples(window),
        )
        return judge(
            spec.name,
            spec.thresholds,
            value,
            samples=samples,
            min_samples=self.context.min_samples,
            stable=stable if spec.max_ratio_to_stable is not None else None,
            query=query,
            stable_query=stable_query,
            window=window,
            unit="s" if spec.template and spec.template.startswith("latency-") else "",
        )

    async def _drift(self, spec: CheckSpec, window: str) -> CheckResult:
        text = BUILTIN_TEMPLATES["prediction-drift"].query
        query = render(text, self.context.variables(window))
        samples_task = self.samples(window)
        if not self.context.stable_revision:
            samples = await samples_task
            value: Outcome = NoValues("no stable revision to compare with")
            return judge(
                spec.name,
                spec.thresholds,
                value,
                samples=samples,
                min_samples=self.context.min_samples,
                query=query,
                window=window,
            )
        stable_query = render(text, self.context.variables(window, stable=True))
        cand, stab, samples = await asyncio.gather(
            self.provider.query_vector(query, self.at),
            self.provider.query_vector(stable_query, self.at),
            samples_task,
        )
        message_extra = ""
        if isinstance(cand, QueryError):
            value = QueryError(f"candidate distribution: {cand.reason}")
        elif isinstance(stab, QueryError):
            value = QueryError(f"stable distribution: {stab.reason}")
        else:
            value, message_extra = _psi_outcome(cand, stab)
        result = judge(
            spec.name,
            spec.thresholds,
            value,
            samples=samples,
            min_samples=self.context.min_samples,
            query=query,
            stable_query=stable_query,
            window=window,
        )
        if message_extra and result.verdict in (Verdict.PASS, Verdict.FAIL):
            result = replace(result, message=f"{result.message} (PSI {message_extra})")
        return result


def _psi_outcome(candidate: list[Sample], stable: list[Sample]) -> tuple[Outcome, str]:
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
    specs: list[CheckSpec | CheckResult] = []
    for index, raw in enumerate(checks):
        try:
            spec = CheckSpec.from_any(raw)
            spec.validate(f"checks[{index}]")
            specs.append(spec)
        except (CheckSpecError, TypeError, ValueError) as exc:
            name = getattr(raw, "name", None) or (raw.get("name") if isinstance(raw, Mapping) else None)
            specs.append(_error(str(name or f"checks[{index}]"), str(exc)))
    try:
        format_duration(context.interval)
    except ValueError as exc:
        return [
            s if isinstance(s, CheckResult) else _error(s.name, f"analysis.interval: {exc}") for s in specs
        ]
    try:
        provider = context.metric_provider()
    except CheckSpecError as exc:
        return [s if isinstance(s, CheckResult) else _error(s.name, str(exc)) for s in specs]
    run = _Run(context, provider, at)

    async def evaluate(item: CheckSpec | CheckResult) -> CheckResult:
        if isinstance(item, CheckResult):
            return item
        try:
            return await run.check(item)
        except Exception as exc:  # a bug must not turn into a pass, nor stop the other checks
            return _error(item.name, f"check failed unexpectedly: {exc!r}")

    return list(await asyncio.gather(*(evaluate(s) for s in specs)))
