"""The verdict of a metric check, of an analysis run and of a guardrail."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum


# No docstring on purpose: the enum is part of the status schema, and a docstring would become
# its description in the generated CRDs.
class Verdict(StrEnum):
    PASS = "Pass"
    FAIL = "Fail"
    INCONCLUSIVE = "Inconclusive"
    ERROR = "Error"


_WORST_FIRST = (Verdict.FAIL, Verdict.ERROR, Verdict.INCONCLUSIVE)


def combined_verdict(verdicts: Iterable[Verdict]) -> Verdict:
    """The verdict of several checks together: Fail beats Error beats Inconclusive beats Pass.

    No checks at all say nothing, so they are Inconclusive (never a pass).
    """
    seen = set(verdicts)
    for verdict in _WORST_FIRST:
        if verdict in seen:
            return verdict
    return Verdict.PASS if seen else Verdict.INCONCLUSIVE


@dataclass(frozen=True)
class CheckOutcome:
    """One check's verdict with what it measured: the candidate's value, the stable revision's
    (for a ratio) and the number of requests it saw."""

    name: str
    verdict: Verdict
    value: float | None = None
    stable_value: float | None = None
    samples: float | None = None
    message: str = ""
