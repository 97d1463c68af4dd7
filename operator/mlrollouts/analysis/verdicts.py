"""From measured values to a verdict per check (pure).

Order of judgement, first match wins:

1. ``Error`` when any query the check needs failed (Prometheus unreachable, timeout, bad PromQL,
   several series). An error is never a pass.
2. ``Inconclusive`` when fewer than ``minSamples`` candidate requests were seen in the window
   (never a pass, never a failure: too little traffic says nothing about the model).
3. ``Inconclusive`` when the candidate query has no values (empty vector, NaN, +/-Inf).
4. ``Fail`` when the value is below ``min`` or above ``max``.
5. For ``maxRatioToStable``: ``Inconclusive`` when the stable query has no values; ``Error`` when the
   stable value is negative (a ratio would flip meaning); when the stable value is 0 the check
   passes only if the candidate value is 0 too (ratio taken as 1) and fails otherwise (the ratio is
   infinite); else ``Fail`` when ``value / stable > maxRatioToStable``.
6. ``Pass``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from mlrollouts.core.verdicts import CheckOutcome, Verdict


@dataclass(frozen=True)
class NoValues:
    """The query answered but there is nothing to judge: empty vector, NaN or an infinite value."""

    reason: str


@dataclass(frozen=True)
class QueryError:
    """The query failed: the reason names the cause (unreachable, timeout, bad PromQL, several series)."""

    reason: str


QueryOutcome = float | NoValues | QueryError
"""What a scalar query gives: a finite value, an explicit "no values", or an error."""


@dataclass(frozen=True)
class Thresholds:
    min: float | None = None
    max: float | None = None
    max_ratio_to_stable: float | None = None

    def is_empty(self) -> bool:
        return self.min is None and self.max is None and self.max_ratio_to_stable is None


@dataclass(frozen=True)
class CheckResult(CheckOutcome):
    """One check's outcome with the evidence: the exact queries sent."""

    query: str = ""
    stable_query: str | None = None

    @property
    def passed(self) -> bool:
        return self.verdict is Verdict.PASS

    def as_status(self) -> dict[str, Any]:
        """A JSON-ready dict (camelCase keys; absent values are omitted) for the resource status."""
        out: dict[str, Any] = {"name": self.name, "verdict": self.verdict.value, "message": self.message}
        if self.value is not None:
            out["value"] = self.value
        if self.stable_value is not None:
            out["stableValue"] = self.stable_value
        if self.samples is not None:
            out["samples"] = self.samples
        if self.query:
            out["query"] = self.query
        if self.stable_query:
            out["stableQuery"] = self.stable_query
        return out


def finite_or_no_values(value: float, what: str = "query") -> float | NoValues:
    """Turn NaN and infinities into an explicit :class:`NoValues` (never into 0)."""
    if math.isnan(value):
        return NoValues(f"{what} returned NaN (no data in the window, e.g. 0/0)")
    if math.isinf(value):
        return NoValues(f"{what} returned {'+' if value > 0 else '-'}Inf")
    return value


def _fmt(value: float) -> str:
    return f"{value:.6g}"


def judge(
    name: str,
    thresholds: Thresholds,
    value: QueryOutcome,
    *,
    samples: QueryOutcome | None = None,
    min_samples: int = 0,
    stable: QueryOutcome | None = None,
    query: str = "",
    stable_query: str | None = None,
    window: str = "",
    unit: str = "",
) -> CheckResult:
    """The verdict for one check; see the module docstring for the rules."""
    if isinstance(value, float | int) and not isinstance(value, bool):
        value = finite_or_no_values(float(value))
    if isinstance(stable, float | int) and not isinstance(stable, bool):
        stable = finite_or_no_values(float(stable), "stable query")
    sample_count = float(samples) if isinstance(samples, float | int) and math.isfinite(samples) else None
    value_num = value if isinstance(value, float) else None
    stable_num = stable if isinstance(stable, float) else None
    suffix = f" {unit}" if unit else ""

    def result(verdict: Verdict, message: str) -> CheckResult:
        return CheckResult(
            name=name,
            verdict=verdict,
            value=value_num,
            stable_value=stable_num,
            samples=sample_count,
            query=query,
            message=message,
            stable_query=stable_query,
        )

    errors = []
    if isinstance(value, QueryError):
        errors.append(f"query failed: {value.reason}")
    if isinstance(samples, QueryError):
        errors.append(f"sample count query failed: {samples.reason}")
    if thresholds.max_ratio_to_stable is not None and isinstance(stable, QueryError):
        errors.append(f"stable query failed: {stable.reason}")
    if errors:
        return result(Verdict.ERROR, "; ".join(errors))

    if min_samples > 0:
        seen = sample_count or 0.0
        if seen < min_samples:
            where = f" in the last {window}" if window else ""
            return result(
                Verdict.INCONCLUSIVE,
                f"{seen:.0f} candidate requests{where}, fewer than minSamples {min_samples}",
            )

    if isinstance(value, NoValues):
        return result(Verdict.INCONCLUSIVE, f"no values: {value.reason}")
    assert isinstance(value, float)

    if thresholds.min is not None and value < thresholds.min:
        return result(Verdict.FAIL, f"value {_fmt(value)}{suffix} is below min {_fmt(thresholds.min)}")
    if thresholds.max is not None and value > thresholds.max:
        return result(Verdict.FAIL, f"value {_fmt(value)}{suffix} is above max {_fmt(thresholds.max)}")

    ratio_note = ""
    limit = thresholds.max_ratio_to_stable
    if limit is not None:
        if stable is None or isinstance(stable, NoValues):
            reason = stable.reason if isinstance(stable, NoValues) else "no stable revision to compare with"
            return result(Verdict.INCONCLUSIVE, f"stable has no values: {reason}")
        assert isinstance(stable, float)
        if stable < 0:
            return result(
                Verdict.ERROR,
                f"stable value {_fmt(stable)} is negative: maxRatioToStable needs a value that is >= 0",
            )
        if stable == 0:
            if value > 0:
                return result(
                    Verdict.FAIL,
                    f"value {_fmt(value)}{suffix} against stable 0: the ratio is infinite "
                    f"(maxRatioToStable {_fmt(limit)})",
                )
            ratio_note = "; stable and candidate are both 0"
        else:
            ratio = value / stable
            if ratio > limit:
                return result(
                    Verdict.FAIL,
                    f"value {_fmt(value)}{suffix} is {_fmt(ratio)}x stable {_fmt(stable)}, "
                    f"above maxRatioToStable {_fmt(limit)}",
                )
            ratio_note = f"; {_fmt(ratio)}x stable {_fmt(stable)}"

    if thresholds.is_empty():
        return result(Verdict.PASS, f"value {_fmt(value)}{suffix} (no threshold set)")
    return result(Verdict.PASS, f"value {_fmt(value)}{suffix} within thresholds{ratio_note}")
