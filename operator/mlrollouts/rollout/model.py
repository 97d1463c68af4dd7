"""The state machine's inputs and outputs: plain, immutable values independent of the CRD shape.

The controller converts the resource (``mlrollouts.api``) into a :class:`RolloutSpec` and a
:class:`RolloutState`, gathers an :class:`Observation`, calls :func:`mlrollouts.rollout.decide`, and
writes the returned state back into the resource status. Times are timezone-aware UTC datetimes.
The enumerations (phase, strategy, failure counting) are the API's own.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from mlrollouts.api.modeldeployment import FailureMode, OnInconclusive, Phase, RevisionOutcome, Strategy
from mlrollouts.core.conditions import Condition
from mlrollouts.core.events import Event
from mlrollouts.core.verdicts import CheckOutcome, Verdict, combined_verdict

if TYPE_CHECKING:
    from mlrollouts.rollout.hooks import HookGates


class StepKind(enum.StrEnum):
    SHADOW = "shadow"
    WEIGHT = "weight"
    APPROVAL = "approval"


class Action(enum.StrEnum):
    PROMOTE = "promote"
    """Pass the current step (or end an approval or analysis hold); the next step runs as usual."""
    PROMOTE_FULL = "promote-full"
    """Skip every remaining step: the candidate goes to 100 %."""
    ABORT = "abort"
    RETRY = "retry"
    RESUME = "resume"


@dataclass(frozen=True)
class Step:
    kind: StepKind
    percent: int = 0
    """Candidate weight (``weight``) or mirrored share (``shadow``), 0..100."""
    duration: float | None = None
    """Seconds the step lasts once its weights are verified; ``None`` = until the first passing analysis."""


@dataclass(frozen=True)
class AnalysisPolicy:
    interval: float = 60.0
    failure_limit: int = 2
    failure_mode: FailureMode = FailureMode.CONSECUTIVE
    inconclusive_limit: int = 3
    on_inconclusive: OnInconclusive = OnInconclusive.HOLD
    enabled: bool = True
    """False when the resource declares no checks: steps then advance on time alone."""


@dataclass(frozen=True)
class RolloutSpec:
    target_revision: str
    replicas: int = 1
    generation: int = 1
    strategy: Strategy = Strategy.CANARY
    steps: tuple[Step, ...] = ()
    analysis: AnalysisPolicy = field(default_factory=AnalysisPolicy)
    progress_deadline: float = 600.0
    scale_down_delay: float = 30.0
    revision_history_limit: int = 2
    paused: bool = False
    history_size: int = 10
    poll_interval: float = 1.0
    """Seconds between ticks while waiting for readiness or for the traffic provider to confirm weights."""

    def effective_steps(self) -> tuple[Step, ...]:
        """Blue/green never splits user traffic: only its shadow and approval steps are kept."""
        if self.strategy is Strategy.IMMEDIATE:
            return ()
        if self.strategy is Strategy.BLUE_GREEN:
            return tuple(s for s in self.steps if s.kind is not StepKind.WEIGHT)
        return self.steps


@dataclass(frozen=True)
class AnalysisRun:
    """The checks evaluated at ``at`` for the current step."""

    at: datetime
    checks: tuple[CheckOutcome, ...]
    revision: str | None = None
    """The candidate the checks judged; a run of another revision is not recorded."""

    @property
    def verdict(self) -> Verdict:
        return combined_verdict(c.verdict for c in self.checks)


@dataclass(frozen=True)
class RevisionHealth:
    ready_replicas: int = 0
    desired_replicas: int = 0
    reason: str = ""
    """Why the revision is not ready, as its pods tell (``CrashLoopBackOff``, a report's reason); "" unknown."""
    message: str = ""
    """The same in words: the container, its restarts, exit code and last words."""

    @property
    def ready(self) -> bool:
        return self.ready_replicas >= max(self.desired_replicas, 1)


@dataclass(frozen=True)
class Observation:
    revisions: dict[str, RevisionHealth] = field(default_factory=dict)
    verified_weights: dict[str, int] | None = None
    """What the traffic provider reads back and trusts; ``None`` while it cannot confirm anything."""
    effective_weights: dict[str, int] | None = None
    """Weights actually realised when they differ from the confirmed ones (replica ratio); for status."""
    analysis: AnalysisRun | None = None
    action: Action | None = None
    hook_gates: HookGates | None = None
    """What the rollout hooks allow (:mod:`mlrollouts.rollout.hooks`); ``None``: no gating hooks."""


@dataclass(frozen=True)
class AnalysisRecord:
    at: datetime
    step: int
    verdict: Verdict
    checks: tuple[CheckOutcome, ...]
    revision: str | None = None
    """The revision judged, stamped when the run is recorded and never changed afterwards."""


@dataclass(frozen=True)
class RevisionAttempt:
    """An earlier rollout of a revision, as it ended: written once, when the revision is rolled out
    again, and never changed."""

    attempt: int
    started_at: datetime
    finished_at: datetime
    """When it stopped: the revision scaled to 0 or rolled out again, whichever came first."""
    outcome: RevisionOutcome
    message: str | None = None


@dataclass(frozen=True)
class RevisionRecord:
    revision: str
    replicas: int
    created_at: datetime
    scale_down_at: datetime | None = None
    """When set, the revision is retired: scaled to 0 at that time and kept for history."""
    outcome: RevisionOutcome | None = None
    """How the current attempt ended (``Promoted``, ``RolledBack``, ``Superseded``); ``None`` while
    it has not. Once set it is never changed: rolling the revision out again starts a new attempt
    and moves this one, as it ended, to ``previous_attempts``."""
    message: str | None = None
    """Why it ended, in words."""
    attempt: int = 1
    """Which rollout of the revision this is, counting the earlier ones no longer kept."""
    started_at: datetime | None = None
    """When the current attempt started; ``None``: at ``created_at``."""
    previous_attempts: tuple[RevisionAttempt, ...] = ()
    """The earlier attempts, oldest first; only appended to, the last ``PREVIOUS_ATTEMPTS_LIMIT`` kept."""

    @property
    def attempt_started_at(self) -> datetime:
        return self.started_at or self.created_at


PER_ROLLOUT = "per_rollout"
"""Metadata key of the :class:`RolloutState` fields of the rollout in flight: they go back to their
defaults when it ends."""
_PER_ROLLOUT_METADATA = {PER_ROLLOUT: True}


@dataclass(frozen=True)
class RolloutState:
    """Everything needed to resume: persisted in the resource status after every decision."""

    phase: Phase = Phase.PENDING
    message: str = ""
    observed_generation: int = 0
    stable: str | None = None
    candidate: str | None = field(default=None, metadata=_PER_ROLLOUT_METADATA)
    failed_revision: str | None = None
    step_index: int = field(default=0, metadata=_PER_ROLLOUT_METADATA)
    step_started_at: datetime | None = field(default=None, metadata=_PER_ROLLOUT_METADATA)
    rollout_started_at: datetime | None = field(default=None, metadata=_PER_ROLLOUT_METADATA)
    weights_changed_at: datetime | None = None
    desired_weights: dict[str, int] = field(default_factory=dict)
    verified_weights: dict[str, int] = field(default_factory=dict)
    shadow: tuple[str, int] | None = None
    paused_at: datetime | None = field(default=None, metadata=_PER_ROLLOUT_METADATA)
    pause_reason: str | None = field(default=None, metadata=_PER_ROLLOUT_METADATA)
    rolling_back: bool = False
    promoting: bool = field(default=False, metadata=_PER_ROLLOUT_METADATA)
    last_analysis_at: datetime | None = field(default=None, metadata=_PER_ROLLOUT_METADATA)
    failures: int = field(default=0, metadata=_PER_ROLLOUT_METADATA)
    consecutive_failures: int = field(default=0, metadata=_PER_ROLLOUT_METADATA)
    inconclusive: int = field(default=0, metadata=_PER_ROLLOUT_METADATA)
    history: tuple[AnalysisRecord, ...] = ()
    revisions: tuple[RevisionRecord, ...] = ()
    conditions: tuple[Condition, ...] = ()


@dataclass(frozen=True)
class Decision:
    state: RolloutState
    weights: dict[str, int]
    shadow: tuple[str, int] | None
    replicas: dict[str, int]
    """Replicas per revision to apply; the target revision is (re)built, the others only scaled."""
    delete: tuple[str, ...]
    events: tuple[Event, ...]
    requeue_after: float | None
    clear_action: bool = False
