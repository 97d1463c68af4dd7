"""The rollout state machine: ``decide(spec, state, observation, now) -> Decision`` (pure).

One call is one tick. The order inside a tick is fixed:

1. record the analysis run handed in (only if it was due for the current step of the incoming state);
2. react to spec changes (new target revision, revert to stable) and to ``spec.rollout.paused``;
3. apply the manual action from the ``mlrollouts.io/action`` annotation;
4. advance: wait for readiness and verified weights, run the step clock, promote or roll back;
5. housekeeping: scale retired revisions down after ``scaleDownDelay`` (only once their verified
   weight is 0) and delete those beyond ``revisionHistoryLimit``; recompute conditions.

Counting rules, documented because they decide when a canary dies:

- ``failureLimit`` counts failed analysis runs. ``failureMode: Consecutive`` (default) counts runs
  failed in a row (a pass resets it); ``Total`` counts every failure since the rollout started.
  Reaching the limit rolls back.
- ``Inconclusive`` and ``Error`` runs never count as a pass: the step does not advance.
  ``Inconclusive`` runs (too little traffic) count towards ``inconclusiveLimit`` (consecutive; a pass
  or a failure resets it); reaching it either holds (phase ``Paused``, resumed by
  ``mlrollouts.io/action: resume``) or rolls back (``onInconclusive``).
- ``Error`` runs (the metrics provider does not answer, a query is refused) say nothing about the
  candidate. With ``onInconclusive: Rollback`` they count like inconclusive runs. With ``Hold`` they
  do not count: the step stands still for as long as the provider is out, the ``Progressing``
  condition (reason ``AnalysisError``) and an event per run say why, and the rollout goes on by
  itself with the first run that is evaluated — no resume is needed after an outage.
- A step ends when its weights are verified, its ``duration`` has elapsed since then, and, when the
  resource has checks, the latest analysis run of the step passed.
"""

from __future__ import annotations

from dataclasses import fields, replace
from datetime import datetime, timedelta

from mlrollouts.api.modeldeployment import (
    PREVIOUS_ATTEMPTS_LIMIT,
    FailureMode,
    OnInconclusive,
    Phase,
    RevisionOutcome,
)
from mlrollouts.core.conditions import DEGRADED, PROGRESSING, READY, ConditionStatus, condition
from mlrollouts.core.events import Event
from mlrollouts.core.verdicts import Verdict
from mlrollouts.rollout.hooks import HOOK_HOLD, Gate, GateVerdict
from mlrollouts.rollout.model import (
    PER_ROLLOUT,
    Action,
    AnalysisRecord,
    AnalysisRun,
    Decision,
    Observation,
    RevisionAttempt,
    RevisionRecord,
    RolloutSpec,
    RolloutState,
    Step,
    StepKind,
)

APPROVAL = "AwaitingApproval"
CANDIDATE_READY = "CandidateReady"
"""Condition of the revision being rolled out: False with the reason its pods give while it is not
ready; its ``lastTransitionTime`` is when it was last seen ready (or the rollout began), from which
``progressDeadline`` counts while it stays so."""
SPEC_PAUSED = "PausedBySpec"
INCONCLUSIVE_HOLD = "InconclusiveAnalysis"


def _positive(weights: dict[str, int] | None) -> dict[str, int]:
    return {k: v for k, v in (weights or {}).items() if v > 0}


def current_step(spec: RolloutSpec, state: RolloutState) -> Step | None:
    steps = spec.effective_steps()
    if state.candidate is None or state.promoting or state.step_index >= len(steps):
        return None
    return steps[state.step_index]


def next_analysis_at(spec: RolloutSpec, state: RolloutState) -> datetime | None:
    """When the next analysis run of the current step is due, or ``None`` if no run is expected."""
    step = current_step(spec, state)
    if (
        step is None
        or step.kind is StepKind.APPROVAL
        or not spec.analysis.enabled
        or state.phase is not Phase.PROGRESSING
        or state.step_started_at is None
    ):
        return None
    base = state.step_started_at
    if state.last_analysis_at is not None and state.last_analysis_at > base:
        base = state.last_analysis_at
    return base + timedelta(seconds=spec.analysis.interval)


def inconclusive_hold_message(runs: int) -> str:
    """Why a rollout holds, and what the user can do about it."""
    return (
        f"held after {runs} inconclusive analysis runs (too few candidate requests per window): "
        "send more traffic, lower spec.rollout.analysis.minSamples, or run `mlrollouts promote NAME`"
    )


def analysis_due(spec: RolloutSpec, state: RolloutState, now: datetime) -> bool:
    """True when the controller should run the checks now and hand the run to :func:`decide`."""
    due = next_analysis_at(spec, state)
    return due is not None and now >= due


class _Tick:
    def __init__(self, spec: RolloutSpec, state: RolloutState, obs: Observation, now: datetime) -> None:
        self.spec = spec
        self.s = state
        self.obs = obs
        self.now = now
        self.events: list[Event] = []
        self.requeue: list[float] = []
        self.clear_action = False
        self.delete: list[str] = []

    # -- helpers ---------------------------------------------------------------------------------

    def event(self, reason: str, message: str, warning: bool = False) -> None:
        self.events.append(Event.warning(reason, message) if warning else Event.normal(reason, message))

    def update(self, **changes: object) -> None:
        self.s = replace(self.s, **changes)  # type: ignore[arg-type]

    def wait(self, seconds: float | None = None) -> None:
        self.requeue.append(max(self.spec.poll_interval if seconds is None else seconds, 0.0))

    def wait_until(self, when: datetime) -> None:
        self.wait((when - self.now).total_seconds())

    def ready(self, revision: str | None) -> bool:
        if revision is None:
            return False
        health = self.obs.revisions.get(revision)
        return health is not None and health.ready

    def verified(self) -> bool:
        return self.obs.verified_weights is not None and _positive(self.obs.verified_weights) == _positive(
            self.s.desired_weights
        )

    def set_weights(self, weights: dict[str, int], shadow: tuple[str, int] | None) -> None:
        if _positive(weights) != _positive(self.s.desired_weights) or shadow != self.s.shadow:
            parts = ", ".join(f"{rev}={w}%" for rev, w in sorted(weights.items()))
            if shadow:
                parts += f"; shadow {shadow[0]}={shadow[1]}%"
            self.event("WeightChanged", f"traffic set to {parts}")
            self.update(desired_weights=dict(weights), shadow=shadow, weights_changed_at=self.now)
        elif weights != self.s.desired_weights:
            self.update(desired_weights=dict(weights))

    def upsert_revision(self, revision: str, active: bool) -> None:
        records = [r for r in self.s.revisions if r.revision != revision]
        old = next((r for r in self.s.revisions if r.revision == revision), None)
        if old is None:
            record = RevisionRecord(revision=revision, replicas=self.spec.replicas, created_at=self.now)
            self.event("RevisionCreated", f"revision {revision} created")
        else:
            record = replace(old, replicas=self.spec.replicas if active else old.replicas)
            if active and old.outcome is not None:
                # a new attempt (retry, or the spec back on an older revision): the one that ended
                # is kept as it ended and the record describes the new one
                record = replace(
                    record,
                    attempt=old.attempt + 1,
                    started_at=self.now,
                    outcome=None,
                    message=None,
                    previous_attempts=(*old.previous_attempts, self.ended_attempt(old))[
                        -PREVIOUS_ATTEMPTS_LIMIT:
                    ],
                )
        if active:
            record = replace(record, scale_down_at=None)
        records.append(record)
        self.update(revisions=tuple(records))

    def ended_attempt(self, record: RevisionRecord) -> RevisionAttempt:
        """The current attempt of ``record``, which has an outcome, as it ended: it stopped when the
        revision was scaled down, or now, when it is rolled out again while still up."""
        assert record.outcome is not None
        stopped = record.scale_down_at
        return RevisionAttempt(
            attempt=record.attempt,
            started_at=record.attempt_started_at,
            finished_at=min(stopped, self.now) if stopped is not None else self.now,
            outcome=record.outcome,
            message=record.message,
        )

    def conclude(self, revision: str | None, outcome: RevisionOutcome, message: str) -> None:
        """Record how the current attempt of ``revision`` ended. A final outcome stays: a promoted
        revision that is later replaced keeps ``Promoted`` and its message gains why it stopped
        serving; earlier attempts are never touched."""

        def concluded(record: RevisionRecord) -> RevisionRecord:
            if record.outcome is None:
                return replace(record, outcome=outcome, message=message)
            if record.message and message in record.message:
                return record
            return replace(record, message=f"{record.message}; {message}" if record.message else message)

        self.update(revisions=tuple(concluded(r) if r.revision == revision else r for r in self.s.revisions))

    def retire(self, revision: str | None, delay: float) -> None:
        if revision is None:
            return
        at = self.now + timedelta(seconds=delay)
        self.update(
            revisions=tuple(
                replace(r, scale_down_at=at) if r.revision == revision and r.scale_down_at is None else r
                for r in self.s.revisions
            )
        )

    def progress_marker(self) -> datetime:
        marks = [
            m for m in (self.s.rollout_started_at, self.s.step_started_at, self.s.weights_changed_at) if m
        ]
        return max(marks) if marks else self.now

    def deadline_exceeded(self) -> bool:
        return (self.now - self.progress_marker()).total_seconds() > self.spec.progress_deadline

    def unready_for(self, revision: str) -> float:
        """Seconds ``revision`` (the candidate) has not been ready in this rollout. Confirmed weights
        are no progress here: a candidate at weight 0 that never starts must meet the deadline too."""
        previous = next((c for c in self.s.conditions if c.type == CANDIDATE_READY), None)
        since = self.now
        if (
            previous is not None
            and previous.status is ConditionStatus.FALSE
            and previous.last_transition_time
        ):
            since = previous.last_transition_time
        if self.s.rollout_started_at is not None:
            since = max(since, self.s.rollout_started_at)
        return max((self.now - since).total_seconds(), 0.0)

    def trouble(self, revision: str | None) -> str:
        """What the pods of a revision that is not ready say about it, as a suffix ("" when nothing)."""
        health = self.obs.revisions.get(revision or "")
        return f": {health.message}" if health is not None and health.message else ""

    # -- 1. analysis -----------------------------------------------------------------------------

    def record_analysis(self, run: AnalysisRun | None) -> None:
        if run is None or self.s.candidate is None or not analysis_due(self.spec, self.s, run.at):
            return
        if run.revision is not None and run.revision != self.s.candidate:
            return
        verdict = run.verdict
        record = AnalysisRecord(
            at=run.at, step=self.s.step_index, verdict=verdict, checks=run.checks, revision=self.s.candidate
        )
        history = (*self.s.history, record)[-self.spec.history_size :]
        self.update(history=history, last_analysis_at=run.at)
        details = "; ".join(f"{c.name}: {c.verdict.value} {c.message}".strip() for c in run.checks)
        if verdict is Verdict.PASS:
            self.update(consecutive_failures=0, inconclusive=0)
            self.event("AnalysisPassed", f"step {self.s.step_index + 1}: {details}")
        elif verdict is Verdict.FAIL:
            self.analysis_failed(details)
        else:
            self.analysis_inconclusive(verdict, details)

    def analysis_failed(self, details: str) -> None:
        policy = self.spec.analysis
        self.update(
            failures=self.s.failures + 1,
            consecutive_failures=self.s.consecutive_failures + 1,
            inconclusive=0,
        )
        count = (
            self.s.consecutive_failures if policy.failure_mode is FailureMode.CONSECUTIVE else self.s.failures
        )
        self.event(
            "AnalysisFailed",
            f"step {self.s.step_index + 1}: {details} ({count}/{policy.failure_limit} "
            f"{policy.failure_mode.value.lower()} failures)",
            warning=True,
        )
        if count >= policy.failure_limit:
            self.rollback("AnalysisFailed", f"analysis failed {count} times (limit {policy.failure_limit})")

    def analysis_inconclusive(self, verdict: Verdict, details: str) -> None:
        """An Inconclusive or Error run: never a pass, counted towards ``inconclusiveLimit`` (an Error
        run only when the policy rolls back: under Hold the step waits for the provider)."""
        policy = self.spec.analysis
        if verdict is Verdict.ERROR and policy.on_inconclusive is OnInconclusive.HOLD:
            self.event(
                "AnalysisError",
                f"step {self.s.step_index + 1}: {details} (the step waits until the analysis can be evaluated)",
                warning=True,
            )
            return
        self.update(inconclusive=self.s.inconclusive + 1)
        reason = "AnalysisError" if verdict is Verdict.ERROR else "AnalysisInconclusive"
        self.event(
            reason,
            f"step {self.s.step_index + 1}: {details} ({self.s.inconclusive}/{policy.inconclusive_limit})",
            warning=True,
        )
        if self.s.inconclusive < policy.inconclusive_limit:
            return
        if policy.on_inconclusive is OnInconclusive.ROLLBACK:
            self.rollback(INCONCLUSIVE_HOLD, f"{self.s.inconclusive} inconclusive analysis runs in a row")
        else:
            self.pause(INCONCLUSIVE_HOLD, inconclusive_hold_message(self.s.inconclusive))

    # -- 2. spec -----------------------------------------------------------------------------------

    def follow_spec(self) -> None:
        target = self.spec.target_revision
        if self.s.stable is None and self.s.candidate is None:
            self.upsert_revision(target, active=True)
            self.update(stable=target, phase=Phase.PROGRESSING, message=f"deploying revision {target}")
            self.update(rollout_started_at=self.now)
            self.set_weights({target: 100}, None)
            return
        if target == self.s.stable:
            if self.s.candidate is not None:
                cancelled = self.s.candidate
                self.set_weights({target: 100}, None)
                self.conclude(cancelled, RevisionOutcome.SUPERSEDED, f"withdrawn: spec reverted to {target}")
                self.retire(cancelled, 0)
                self.end_rollout()
                self.update(phase=Phase.HEALTHY, message=f"spec reverted to stable revision {target}")
                self.event("RolloutReverted", f"spec reverted to {target}; candidate {cancelled} withdrawn")
            elif self.s.failed_revision is not None:
                self.update(failed_revision=None, phase=Phase.HEALTHY, message=f"serving revision {target}")
                self.event("RolloutReverted", f"spec reverted to stable revision {target}")
            return
        if target == self.s.candidate or (target == self.s.failed_revision and self.s.candidate is None):
            return
        if self.s.candidate is not None:
            self.event(
                "RolloutRestarted", f"spec changed mid-rollout: {self.s.candidate} replaced by {target}"
            )
            self.conclude(
                self.s.candidate,
                RevisionOutcome.SUPERSEDED,
                f"withdrawn mid-rollout: spec changed to {target}",
            )
            self.retire(self.s.candidate, 0)
        self.start_rollout(target)

    def start_rollout(self, target: str) -> None:
        stable = self.s.stable
        assert stable is not None
        self.upsert_revision(target, active=True)
        self.end_rollout()
        self.update(
            candidate=target,
            failed_revision=None,
            phase=Phase.PROGRESSING,
            rollout_started_at=self.now,
            message=f"rolling out revision {target} (stable {stable})",
        )
        self.set_weights({stable: 100, target: 0}, None)
        self.event("RolloutStarted", f"rollout of revision {target} started ({self.spec.strategy.value})")

    def end_rollout(self) -> None:
        self.update(**{f.name: f.default for f in fields(RolloutState) if f.metadata.get(PER_ROLLOUT)})

    def follow_pause(self) -> None:
        if self.s.candidate is None:
            return
        if self.spec.paused and self.s.phase is not Phase.PAUSED:
            self.pause(SPEC_PAUSED, "paused by spec.rollout.paused")
        elif not self.spec.paused and self.s.pause_reason == SPEC_PAUSED:
            self.resume()

    def pause(self, reason: str, message: str) -> None:
        self.update(phase=Phase.PAUSED, paused_at=self.now, pause_reason=reason, message=message)
        self.event("Paused", message)

    def resume(self) -> None:
        """Leave Paused; the step clock does not count the time spent paused."""
        started = self.s.step_started_at
        if started is not None and self.s.paused_at is not None:
            started = started + (self.now - self.s.paused_at)
        reason = self.s.pause_reason
        self.update(phase=Phase.PROGRESSING, paused_at=None, pause_reason=None, step_started_at=started)
        if reason == APPROVAL:
            self.complete_step("approved")
        if reason == INCONCLUSIVE_HOLD:
            self.update(inconclusive=0)
        self.update(message=f"rolling out revision {self.s.candidate}")
        self.event("Resumed", f"rollout of {self.s.candidate} resumed")

    # -- 3. actions ---------------------------------------------------------------------------------

    def apply_action(self, action: Action | None) -> None:
        if action is None:
            return
        self.clear_action = True
        ignored = self.action_ignored(action)
        if ignored is not None:
            self.event("ActionIgnored", f"action {action.value!r} ignored: {ignored}")
        elif action is Action.PROMOTE_FULL:
            self.event("PromotionRequested", f"full promotion of {self.s.candidate}: remaining steps skipped")
            self.update(promoting=True, phase=Phase.PROGRESSING, paused_at=None, pause_reason=None)
        elif action is Action.PROMOTE:
            self.promote_step()
        elif action is Action.ABORT:
            self.rollback("Aborted", "rollout aborted by the mlrollouts.io/action annotation")
        elif action is Action.RETRY:
            self.event("RetryRequested", f"retrying the rollout of {self.s.failed_revision}")
            self.start_rollout(self.spec.target_revision)
        else:
            self.resume()

    def action_ignored(self, action: Action) -> str | None:
        """Why ``action`` has no effect now (``None``: it applies); the plugin checks the same rules
        before it writes the annotation."""
        phase = self.s.phase.value
        if action is Action.RETRY:
            retryable = (
                self.s.phase is Phase.DEGRADED
                and self.s.failed_revision == self.spec.target_revision
                and self.s.stable is not None
            )
            return None if retryable else f"no rolled-back revision to retry (phase {phase})"
        if self.s.candidate is None:
            return f"no rollout in progress (phase {phase})"
        if action is Action.ABORT:
            return None
        if self.s.phase is Phase.PAUSED and self.s.pause_reason == SPEC_PAUSED:
            return "paused by spec.rollout.paused; set it to false first"
        if action is Action.RESUME:
            return None if self.s.phase is Phase.PAUSED else f"the rollout is not paused (phase {phase})"
        if self.s.promoting or self.s.step_index >= len(self.spec.effective_steps()):
            return f"revision {self.s.candidate} is already being promoted to 100 %"
        return None

    def promote_step(self) -> None:
        """Pass the current step: an approval or a hold ends, a running step ends now; the next step
        then runs with its own duration and checks."""
        total = len(self.spec.effective_steps())
        self.event(
            "PromotionRequested",
            f"manual promotion of {self.s.candidate}: step {self.s.step_index + 1}/{total} passed",
        )
        if self.s.phase is Phase.PAUSED:
            awaiting_approval = self.s.pause_reason == APPROVAL
            self.resume()  # an approval step is completed by resuming it
            if awaiting_approval:
                return
        self.complete_step("passed by promote")

    # -- 4. advance ---------------------------------------------------------------------------------

    def rollback(self, reason: str, message: str) -> None:
        candidate, stable = self.s.candidate, self.s.stable
        if candidate is None or stable is None:
            return
        # weight 0 first; housekeeping scales the candidate down once the provider confirms it
        self.set_weights({stable: 100, candidate: 0}, None)
        self.conclude(candidate, RevisionOutcome.ROLLED_BACK, f"{reason}: {message}")
        self.retire(candidate, 0)
        self.end_rollout()
        self.update(phase=Phase.DEGRADED, failed_revision=candidate, message=f"{reason}: {message}")
        self.event("RolledBack", f"revision {candidate} rolled back to {stable}: {message}", warning=True)

    def complete_step(self, how: str) -> None:
        self.event("StepCompleted", f"step {self.s.step_index + 1} of {self.s.candidate} {how}")
        self.update(step_index=self.s.step_index + 1, step_started_at=None, inconclusive=0)

    def advance(self) -> None:
        if self.s.candidate is None:
            self.settle_stable()
            return
        if self.s.phase in (Phase.PAUSED, Phase.DEGRADED):
            return
        candidate, stable = self.s.candidate, self.s.stable
        assert stable is not None
        if not self.ready(candidate):
            waited = self.unready_for(candidate)
            if waited > self.spec.progress_deadline:
                self.rollback(
                    "ProgressDeadlineExceeded",
                    f"revision {candidate} not ready after {int(waited)}s "
                    f"(progressDeadline {int(self.spec.progress_deadline)}s){self.trouble(candidate)}",
                )
            else:
                self.update(
                    message=f"waiting for revision {candidate} to become ready{self.trouble(candidate)}"
                )
                self.wait()
            return
        steps = self.spec.effective_steps()
        gates = self.obs.hook_gates
        if gates is not None and self.hook_gate_closed(gates.pre_rollout):
            return
        for _ in range(len(steps) + 1):
            if self.s.promoting or self.s.step_index >= len(steps):
                self.promote()
                return
            step = steps[self.s.step_index]
            if (
                gates is not None
                and self.s.step_started_at is None
                and self.hook_gate_closed(gates.before_step(self.s.step_index))
            ):
                return
            if step.kind is StepKind.APPROVAL:
                self.pause(
                    APPROVAL, f"step {self.s.step_index + 1}: waiting for approval (promote or resume)"
                )
                return
            if step.kind is StepKind.WEIGHT:
                self.set_weights({stable: 100 - step.percent, candidate: step.percent}, None)
            else:
                self.set_weights({stable: 100, candidate: 0}, (candidate, step.percent))
            self.update(message=self.step_message(step, len(steps)))
            if not self.verified():
                if self.deadline_exceeded():
                    self.rollback("ProgressDeadlineExceeded", "traffic weights were not confirmed in time")
                else:
                    self.wait()
                return
            if self.s.step_started_at is None:
                self.update(step_started_at=self.now)
                self.event("StepStarted", f"step {self.s.step_index + 1}/{len(steps)}: {self.describe(step)}")
            started = self.s.step_started_at
            assert started is not None
            ends = started + timedelta(seconds=step.duration or 0)
            if self.now < ends:
                self.wait_until(ends)
                self.wait_for_analysis()
                return
            if self.spec.analysis.enabled:
                latest = self.s.history[-1] if self.s.history else None
                fresh = (
                    latest is not None
                    and latest.at >= started
                    and latest.step == self.s.step_index
                    and latest.revision in (None, candidate)
                )
                if not (fresh and latest is not None and latest.verdict is Verdict.PASS):
                    self.wait_for_analysis()
                    return
            self.complete_step("completed")

    def hook_gate_closed(self, gate: Gate) -> bool:
        """A rollout hook not called yet (wait for the next pass), or failed (hold or roll back)."""
        if gate.verdict is GateVerdict.OPEN:
            return False
        if gate.verdict is GateVerdict.WAIT:
            self.update(message=gate.message)
            self.wait()
        elif gate.verdict is GateVerdict.HOLD:
            self.pause(HOOK_HOLD, gate.message)
        else:
            self.rollback("HookFailed", gate.message)
        return True

    def wait_for_analysis(self) -> None:
        due = next_analysis_at(self.spec, self.s)
        if due is not None:
            self.wait_until(due)

    def step_message(self, step: Step, steps: int) -> str:
        """What the rollout is doing now; the step number is the one people count (1-based)."""
        doing = f"step {self.s.step_index + 1}/{steps}: {self.describe(step)} to revision {self.s.candidate}"
        if not self.verified():
            return f"{doing}, waiting for the traffic provider to confirm it"
        return doing

    @staticmethod
    def describe(step: Step) -> str:
        if step.kind is StepKind.SHADOW:
            return f"shadow {step.percent}%"
        return f"weight {step.percent}%"

    def promote(self) -> None:
        candidate, stable = self.s.candidate, self.s.stable
        assert candidate is not None and stable is not None
        self.update(promoting=True)
        self.set_weights({stable: 0, candidate: 100}, None)
        if not self.verified():
            self.update(message=f"promoting revision {candidate}: moving all traffic to it")
            self.wait()
            return
        self.conclude(candidate, RevisionOutcome.PROMOTED, self.promotion_note())
        self.conclude(stable, RevisionOutcome.SUPERSEDED, f"superseded by {candidate}")
        self.retire(stable, self.spec.scale_down_delay)
        self.end_rollout()
        self.update(stable=candidate, phase=Phase.HEALTHY, message=f"serving revision {candidate}")
        self.set_weights({candidate: 100}, None)
        self.event("Promoted", f"revision {candidate} promoted; {stable} retired")

    def promotion_note(self) -> str:
        steps = len(self.spec.effective_steps())
        if self.s.step_index >= steps:
            return f"promoted after {steps} of {steps} steps" if steps else "promoted"
        return f"promoted at step {self.s.step_index + 1} of {steps} (manual promotion)"

    def settle_stable(self) -> None:
        stable = self.s.stable
        if stable is None:
            return
        first_deployment_stuck = self.s.phase is Phase.DEGRADED and self.s.rollout_started_at is not None
        if self.s.phase is Phase.DEGRADED and not first_deployment_stuck:
            return  # a rolled-back candidate: Degraded until the spec changes or a retry
        self.set_weights({stable: 100}, None)
        if self.ready(stable) and self.verified():
            if self.s.phase is not Phase.HEALTHY:
                self.event("Available", f"revision {stable} is serving")
            self.update(phase=Phase.HEALTHY, message=f"serving revision {stable}", rollout_started_at=None)
            return
        # There is nothing to roll back to: past the deadline the first revision is reported Degraded
        # and still watched, so it turns Healthy when it becomes ready after all.
        # not ready: counted from the start (confirmed weights are no progress); else from the weights
        started = self.s.rollout_started_at
        marker = started if started is not None and not self.ready(stable) else self.progress_marker()
        waited = (self.now - marker).total_seconds()
        if not first_deployment_stuck and started is not None and waited > self.spec.progress_deadline:
            what = (
                "not ready" if not self.ready(stable) else "ready, but its traffic weight was not confirmed"
            )
            message = (
                f"ProgressDeadlineExceeded: first revision {stable} {what} after {int(waited)}s "
                f"(progressDeadline {int(self.spec.progress_deadline)}s){self.trouble(stable)}"
            )
            self.update(phase=Phase.DEGRADED, message=message)
            self.event("ProgressDeadlineExceeded", message.split(": ", 1)[1], warning=True)
        elif not first_deployment_stuck:
            self.update(message=f"waiting for revision {stable} to become ready{self.trouble(stable)}")
        self.wait()

    # -- 5. housekeeping ----------------------------------------------------------------------------

    def replicas(self) -> dict[str, int]:
        verified = self.obs.verified_weights
        out: dict[str, int] = {}
        for record in self.s.revisions:
            if record.scale_down_at is None:
                out[record.revision] = record.replicas
                continue
            done = (
                self.now >= record.scale_down_at
                and verified is not None
                and verified.get(record.revision, 0) == 0
                and self.s.desired_weights.get(record.revision, 0) == 0
            )
            if done:
                out[record.revision] = 0
            else:
                out[record.revision] = record.replicas
                if self.now < record.scale_down_at:
                    self.wait_until(record.scale_down_at)
                else:
                    self.wait()
        return out

    def prune_history(self) -> None:
        live = {self.s.stable, self.s.candidate}
        retired = [
            r
            for _, r in sorted(
                (
                    ((r.scale_down_at or r.created_at, r.created_at, i), r)
                    for i, r in enumerate(self.s.revisions)
                    if r.scale_down_at is not None and r.revision not in live
                ),
                # most recently retired first; ties broken by creation, then by record order
                key=lambda pair: pair[0],
                reverse=True,
            )
        ]
        doomed = {r.revision for r in retired[self.spec.revision_history_limit :]}
        if not doomed:
            return
        self.delete.extend(sorted(doomed))
        for revision in sorted(doomed):
            self.event("RevisionDeleted", f"revision {revision} deleted (revisionHistoryLimit)")
        self.update(revisions=tuple(r for r in self.s.revisions if r.revision not in doomed))
        weights = {k: v for k, v in self.s.desired_weights.items() if k not in doomed}
        self.update(desired_weights=weights)

    def unevaluated_analysis(self) -> str | None:
        """Why the step stands still when its latest analysis run could not be evaluated (metrics
        provider unreachable, query refused): no evidence either way, so the condition names the cause
        until a run is evaluated again."""
        last = self.s.history[-1] if self.s.history else None
        if (
            last is None
            or last.verdict is not Verdict.ERROR
            or last.revision != self.s.candidate
            or last.step != self.s.step_index
        ):
            return None
        causes = "; ".join(f"{c.name}: {c.message}" for c in last.checks if c.verdict is Verdict.ERROR)
        return f"{self.s.message}; held: analysis cannot be evaluated ({causes})"

    def conditions(self) -> None:
        phase = self.s.phase
        ready = (ConditionStatus.TRUE, "RevisionServing", f"revision {self.s.stable} is ready and serving")
        if not self.ready(self.s.stable):
            ready = (ConditionStatus.FALSE, "NoReadyRevision", "no ready revision is serving yet")
        if phase is Phase.PROGRESSING:
            progressing = (ConditionStatus.TRUE, "RolloutInProgress", self.s.message)
            if (unevaluated := self.unevaluated_analysis()) is not None:
                progressing = (ConditionStatus.TRUE, "AnalysisError", unevaluated)
        elif phase is Phase.PAUSED:
            progressing = (ConditionStatus.UNKNOWN, self.s.pause_reason or "Paused", self.s.message)
        elif phase is Phase.DEGRADED:
            progressing = (ConditionStatus.FALSE, "RolloutAborted", self.s.message)
        else:
            progressing = (ConditionStatus.FALSE, "RolloutComplete", self.s.message)
        if phase is Phase.DEGRADED:
            degraded = (ConditionStatus.TRUE, self.s.message.split(":", 1)[0] or "Degraded", self.s.message)
        else:
            degraded = (ConditionStatus.FALSE, "AsExpected", "no failed rollout")
        kinds = [(READY, ready), (PROGRESSING, progressing), (DEGRADED, degraded)]
        if (candidate := self.s.candidate) is not None:
            kinds.append((CANDIDATE_READY, self.candidate_ready(candidate)))
        conditions = tuple(
            condition(
                ctype,
                status,
                reason,
                message,
                previous=self.s.conditions,
                now=self.now,
                generation=self.spec.generation,
            )
            for ctype, (status, reason, message) in kinds
        )
        self.update(conditions=conditions, observed_generation=self.spec.generation)

    def candidate_ready(self, candidate: str) -> tuple[ConditionStatus, str, str]:
        health = self.obs.revisions.get(candidate)
        if health is not None and health.ready:
            return ConditionStatus.TRUE, "RevisionReady", f"revision {candidate} is ready"
        if health is None:
            return ConditionStatus.FALSE, "NotReady", f"revision {candidate}: no replicas yet"
        return (
            ConditionStatus.FALSE,
            health.reason or "NotReady",
            f"revision {candidate}: {health.ready_replicas}/{health.desired_replicas} replicas ready"
            f"{self.trouble(candidate)}",
        )

    def run(self) -> Decision:
        self.record_analysis(self.obs.analysis)
        self.follow_spec()
        self.follow_pause()
        self.apply_action(self.obs.action)
        self.advance()
        self.update(verified_weights=dict(self.obs.effective_weights or self.obs.verified_weights or {}))
        replicas = self.replicas()
        self.prune_history()
        for revision in self.delete:
            replicas.pop(revision, None)
        self.conditions()
        return Decision(
            state=self.s,
            weights=dict(self.s.desired_weights),
            shadow=self.s.shadow,
            replicas=replicas,
            delete=tuple(self.delete),
            events=tuple(self.events),
            requeue_after=min(self.requeue) if self.requeue else None,
            clear_action=self.clear_action,
        )


def decide(spec: RolloutSpec, state: RolloutState, observation: Observation, now: datetime) -> Decision:
    """The next step of a ModelDeployment's rollout from what was observed at ``now``."""
    return _Tick(spec, state, observation, now).run()
