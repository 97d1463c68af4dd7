"""Online learning decisions (pure): snapshot gating by the guard, the pin the learner must hold,
``status.learning``, events and the ``LearningHealthy`` condition.

The controller observes the learner (``GET /v1/status`` → :func:`parse_report`), calls
:func:`decide_learning`, and applies the pin (``POST /v1/pin``) and the status.
"""

from mlrollouts.learning.checks import learning_refusal
from mlrollouts.learning.decide import (
    LEARNING_HEALTHY,
    MAX_SNAPSHOT_RECORDS,
    LearningDecision,
    decide_learning,
    window_of,
)
from mlrollouts.learning.guard import GuardState, breach, judge
from mlrollouts.learning.report import (
    LearnerReport,
    ReportError,
    SnapshotInfo,
    Unreachable,
    parse_report,
)

__all__ = [
    "LEARNING_HEALTHY",
    "MAX_SNAPSHOT_RECORDS",
    "GuardState",
    "LearnerReport",
    "LearningDecision",
    "ReportError",
    "SnapshotInfo",
    "Unreachable",
    "breach",
    "decide_learning",
    "judge",
    "learning_refusal",
    "parse_report",
    "window_of",
]
