"""Population stability index (PSI) between two prediction distributions (pure).

``PSI = sum_i (c_i - s_i) * ln(c_i / s_i)`` where ``c_i`` and ``s_i`` are the candidate's and the
stable revision's shares of predictions in bucket ``i``, over the union of buckets. A bucket empty on
one side gets the share ``epsilon`` instead of 0 (shares are not renormalised), so a bucket seen by
only one revision adds a large but finite term. Rules of thumb: < 0.1 no shift, 0.1-0.25 moderate,
> 0.25 a significant shift.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

DEFAULT_EPSILON = 1e-4


def population_stability_index(
    candidate: Mapping[str, float], stable: Mapping[str, float], epsilon: float = DEFAULT_EPSILON
) -> float:
    """PSI of two histograms given as ``bucket -> count``; raises ``ValueError`` when one side is empty."""
    if epsilon <= 0:
        raise ValueError("epsilon must be positive")
    cand_total = sum(max(v, 0.0) for v in candidate.values())
    stable_total = sum(max(v, 0.0) for v in stable.values())
    if cand_total <= 0:
        raise ValueError("the candidate has no predictions in the window")
    if stable_total <= 0:
        raise ValueError("the stable revision has no predictions in the window")
    psi = 0.0
    for bucket in sorted(set(candidate) | set(stable)):
        c = max(max(candidate.get(bucket, 0.0), 0.0) / cand_total, epsilon)
        s = max(max(stable.get(bucket, 0.0), 0.0) / stable_total, epsilon)
        psi += (c - s) * math.log(c / s)
    return psi


def histograms_by_output(samples: Iterable[tuple[Mapping[str, str], float]]) -> dict[str, dict[str, float]]:
    """Group ``(labels, count)`` samples of ``mlserving_predictions_total`` as ``output -> bucket -> n``."""
    grouped: dict[str, dict[str, float]] = {}
    for labels, count in samples:
        if not math.isfinite(count):
            continue
        output = labels.get("output", "")
        bucket = labels.get("bucket", "")
        per_output = grouped.setdefault(output, {})
        per_output[bucket] = per_output.get(bucket, 0.0) + count
    return grouped


def drift_by_output(
    candidate: Mapping[str, Mapping[str, float]],
    stable: Mapping[str, Mapping[str, float]],
    epsilon: float = DEFAULT_EPSILON,
) -> dict[str, float]:
    """PSI per output present on both sides with predictions; outputs missing on one side are skipped."""
    result: dict[str, float] = {}
    for output in sorted(set(candidate) & set(stable)):
        cand, stab = candidate[output], stable[output]
        if sum(max(v, 0.0) for v in cand.values()) <= 0 or sum(max(v, 0.0) for v in stab.values()) <= 0:
            continue
        result[output] = population_stability_index(cand, stab, epsilon)
    return result
