"""The canary / blue-green / immediate rollout state machine (pure: time is an argument).

Its phases, strategies and failure counting are the API's enumerations (``mlrollouts.api``);
verdicts, events and conditions are the shared ones of ``mlrollouts.core``.
"""

from mlrollouts.rollout.machine import analysis_due, current_step, decide, next_analysis_at
from mlrollouts.rollout.model import (
    Action,
    AnalysisPolicy,
    AnalysisRecord,
    AnalysisRun,
    Decision,
    Observation,
    RevisionHealth,
    RevisionRecord,
    RolloutSpec,
    RolloutState,
    Step,
    StepKind,
)
from mlrollouts.rollout.revision import revision_hash

__all__ = [
    "Action",
    "AnalysisPolicy",
    "AnalysisRecord",
    "AnalysisRun",
    "Decision",
    "Observation",
    "RevisionHealth",
    "RevisionRecord",
    "RolloutSpec",
    "RolloutState",
    "Step",
    "StepKind",
    "analysis_due",
    "current_step",
    "decide",
    "next_analysis_at",
    "revision_hash",
]
