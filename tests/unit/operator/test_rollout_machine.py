"""The rollout state machine, tick by tick with a fixed clock and a perfect traffic provider."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from mlrollouts.api import FailureMode, OnInconclusive, Phase, Strategy
from mlrollouts.core.verdicts import CheckOutcome, Verdict
from mlrollouts.rollout import (
    Action,
    AnalysisPolicy,
    AnalysisRun,
    Observation,
    RevisionHealth,
    RolloutSpec,
    RolloutState,
    Step,
    StepKind,
    analysis_due,
    decide,
)

T0 = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
STEPS = (
    Step(StepKind.SHADOW, 50, 10),
    Step(StepKind.WEIGHT, 20, 10),
    Step(StepKind.WEIGHT, 50, 10),
)
POLICY = AnalysisPolicy(interval=5, failure_limit=2, inconclusive_limit=3)


def spec(rev: str = "r1", **kw) -> RolloutSpec:
    base = dict(
        target_revision=rev,
        replicas=2,
        steps=STEPS,
        analysis=POLICY,
        scale_down_delay=30,
        progress_deadline=60,
        revision_history_limit=1,
    )
    base.update(kw)
    return RolloutSpec(**base)


class Sim:
    """A cluster as the controller would observe it: revisions with replicas become ready one tick later,
    the provider applies weights at once and reports them back on the next tick."""

    def __init__(self, s: RolloutSpec) -> None:
        self.spec = s
        self.state = RolloutState()
        self.now = T0
        self.weights: dict[str, int] | None = None
        self.replicas: dict[str, int] = {}
        self.broken: set[str] = set()
        self.provider_confirms = True
        self.decision = None
        self.analysis_runs = 0

    def tick(self, after: float = 0.0, verdict: Verdict | None = None, action: Action | None = None):
        self.now += timedelta(seconds=after)
        run = None
        if verdict is not None:
            assert analysis_due(self.spec, self.state, self.now), "analysis not due at this tick"
            run = AnalysisRun(self.now, (CheckOutcome("error-rate", verdict, value=0.01),))
            self.analysis_runs += 1
        revisions = {
            rev: RevisionHealth(ready_replicas=0 if rev in self.broken else n, desired_replicas=n)
            for rev, n in self.replicas.items()
        }
        obs = Observation(
            revisions=revisions,
            verified_weights=self.weights if self.provider_confirms else None,
            analysis=run,
            action=action,
        )
        d = decide(self.spec, self.state, obs, self.now)
        self.decision = d
        self.state = d.state
        if self.provider_confirms:
            self.weights = dict(d.weights)
        self.replicas.update(d.replicas)
        for rev in d.delete:
            self.replicas.pop(rev)
        return d

    def change(self, **kw) -> None:
        self.spec = replace(self.spec, generation=self.spec.generation + 1, **kw)

    @property
    def phase(self) -> Phase:
        return self.state.phase

    def reasons(self) -> list[str]:
        return [e.reason for e in self.decision.events]

    def healthy_on(self, rev: str) -> None:
        """Drive the first deployment of ``rev`` to Healthy."""
        self.tick()
        self.tick()
        self.tick()
        assert self.phase is Phase.HEALTHY and self.state.stable == rev


def positive(weights):
    return {k: v for k, v in weights.items() if v}


def started(sim: Sim, rev: str = "r2", clock_starts: bool = True) -> Sim:
    sim.healthy_on("r1")
    sim.change(target_revision=rev)
    d = sim.tick()
    assert sim.phase is Phase.PROGRESSING and sim.state.candidate == rev
    assert positive(d.weights) == {"r1": 100}
    assert d.replicas == {"r1": 2, rev: 2}
    sim.tick()  # candidate ready -> step 1 weights set (shadow)
    sim.tick()  # weights verified -> step clock starts
    if clock_starts:
        assert sim.state.step_started_at == sim.now
    return sim


def test_first_deployment_becomes_healthy_once_ready_and_routed():
    sim = Sim(spec())
    d = sim.tick()
    assert sim.phase is Phase.PROGRESSING
    assert d.weights == {"r1": 100} and d.replicas == {"r1": 2}
    assert "RevisionCreated" in sim.reasons()
    d = sim.tick()
    assert sim.phase is Phase.HEALTHY
    assert "Available" in sim.reasons()
    conditions = {c.type: c for c in sim.state.conditions}
    assert conditions["Ready"].status == "True"
    assert conditions["Progressing"].status == "False"
    assert conditions["Degraded"].status == "False"
    assert all(c.observed_generation == 1 for c in conditions.values())
    assert d.requeue_after is None


def test_good_canary_walks_every_step_then_promotes_and_retires_stable():
    sim = started(Sim(spec()))
    # step 1: shadow 50 % -- no user traffic to the candidate
    assert sim.decision.shadow == ("r2", 50) and positive(sim.decision.weights) == {"r1": 100}
    assert not analysis_due(sim.spec, sim.state, sim.now + timedelta(seconds=4))
    assert sim.decision.requeue_after == 5  # the first analysis is due one interval after the step start
    sim.tick(5, Verdict.PASS)
    assert sim.state.step_index == 0  # duration 10 s not over
    sim.tick(5, Verdict.PASS)
    assert sim.state.step_index == 1 and "StepCompleted" in sim.reasons()
    assert sim.decision.weights == {"r1": 80, "r2": 20} and sim.decision.shadow is None
    assert sim.state.step_started_at is None  # waits for the provider to confirm 20 %
    sim.tick()
    assert sim.state.step_started_at == sim.now
    sim.tick(5, Verdict.PASS)
    sim.tick(5, Verdict.PASS)
    assert sim.decision.weights == {"r1": 50, "r2": 50}
    sim.tick()
    sim.tick(5, Verdict.PASS)
    d = sim.tick(5, Verdict.PASS)
    assert d.weights == {"r1": 0, "r2": 100} and sim.phase is Phase.PROGRESSING
    d = sim.tick()
    assert sim.phase is Phase.HEALTHY and sim.state.stable == "r2" and sim.state.candidate is None
    assert "Promoted" in sim.reasons()
    assert d.replicas == {"r1": 2, "r2": 2}  # kept warm for scaleDownDelay
    assert d.requeue_after == pytest.approx(30)
    d = sim.tick(30)
    assert d.replicas == {"r1": 0, "r2": 2}
    assert len(sim.state.history) == 6 and all(h.verdict is Verdict.PASS for h in sim.state.history)
    assert sim.analysis_runs == 6


def test_analysis_is_not_due_twice_in_one_interval_and_not_before_the_step_starts():
    sim = started(Sim(spec()))
    sim.tick(5, Verdict.PASS)
    assert not analysis_due(sim.spec, sim.state, sim.now + timedelta(seconds=4.9))
    assert analysis_due(sim.spec, sim.state, sim.now + timedelta(seconds=5))


def test_consecutive_failures_roll_back_weight_first_then_scale_down():
    sim = started(Sim(spec()))
    sim.tick(5, Verdict.PASS)
    sim.tick(5, Verdict.PASS)
    sim.tick()  # 20 % verified
    d = sim.tick(5, Verdict.FAIL)
    assert sim.phase is Phase.PROGRESSING and "AnalysisFailed" in sim.reasons()
    assert sim.state.consecutive_failures == 1
    d = sim.tick(5, Verdict.FAIL)
    assert sim.phase is Phase.DEGRADED and "RolledBack" in sim.reasons()
    assert positive(d.weights) == {"r1": 100}
    assert d.replicas["r2"] == 2  # still up: the provider has not confirmed weight 0 yet
    d = sim.tick()
    assert d.replicas["r2"] == 0
    conditions = {c.type: c for c in sim.state.conditions}
    assert conditions["Degraded"].status == "True" and conditions["Degraded"].reason == "AnalysisFailed"
    assert conditions["Ready"].status == "True"
    # stays Degraded with the same spec
    for _ in range(3):
        sim.tick(30)
        assert sim.phase is Phase.DEGRADED and sim.state.failed_revision == "r2"
    # a new spec starts a new rollout
    sim.change(target_revision="r3")
    sim.tick()
    assert sim.phase is Phase.PROGRESSING and sim.state.candidate == "r3"


def test_a_rolled_back_rollout_leaves_nothing_of_itself_in_the_state():
    sim = started(Sim(spec()))
    sim.tick(5, Verdict.PASS)
    sim.tick(5, Verdict.PASS)
    sim.tick()
    sim.tick(5, Verdict.FAIL)
    during = sim.state
    assert (during.candidate, during.step_index, during.failures) == ("r2", 1, 1)
    sim.tick(5, Verdict.FAIL)
    fresh = RolloutState()
    ended = sim.state
    assert sim.phase is Phase.DEGRADED and ended.failed_revision == "r2" and ended.stable == "r1"
    for name in ("candidate", "step_index", "step_started_at", "rollout_started_at", "promoting"):
        assert getattr(ended, name) == getattr(fresh, name), name
    for name in ("last_analysis_at", "failures", "consecutive_failures", "inconclusive"):
        assert getattr(ended, name) == getattr(fresh, name), name
    assert len(ended.history) == len(during.history) + 1  # the analysis record outlives the rollout


def test_failure_mode_total_counts_non_consecutive_failures():
    for mode, expected in ((FailureMode.CONSECUTIVE, Phase.PROGRESSING), (FailureMode.TOTAL, Phase.DEGRADED)):
        sim = started(
            Sim(spec(analysis=replace(POLICY, failure_mode=mode), steps=(Step(StepKind.WEIGHT, 10, 60),)))
        )
        sim.tick(5, Verdict.FAIL)
        sim.tick(5, Verdict.PASS)
        sim.tick(5, Verdict.FAIL)
        assert sim.phase is expected, mode


def test_inconclusive_never_advances_and_holds_after_the_limit_until_resumed():
    sim = started(Sim(spec(steps=(Step(StepKind.WEIGHT, 10, 5), Step(StepKind.WEIGHT, 30, 5)))))
    sim.tick(5, Verdict.INCONCLUSIVE)
    assert sim.state.step_index == 0 and "AnalysisInconclusive" in sim.reasons()
    sim.tick(5, Verdict.ERROR)  # says nothing of the candidate: not counted under Hold
    assert sim.state.step_index == 0 and "AnalysisError" in sim.reasons()
    sim.tick(5, Verdict.INCONCLUSIVE)
    assert sim.phase is Phase.PROGRESSING and sim.state.inconclusive == 2
    sim.tick(5, Verdict.INCONCLUSIVE)
    assert sim.phase is Phase.PAUSED and sim.state.pause_reason == "InconclusiveAnalysis"
    assert positive(sim.decision.weights) == {"r1": 90, "r2": 10}  # held where it was
    assert not analysis_due(sim.spec, sim.state, sim.now + timedelta(seconds=60))
    sim.tick(60)
    assert sim.phase is Phase.PAUSED
    sim.tick(action=Action.RESUME)
    assert sim.phase is Phase.PROGRESSING and sim.decision.clear_action and sim.state.inconclusive == 0
    sim.tick(5, Verdict.PASS)
    assert sim.state.step_index == 1


def test_inconclusive_limit_can_roll_back():
    sim = started(
        Sim(spec(analysis=replace(POLICY, on_inconclusive=OnInconclusive.ROLLBACK, inconclusive_limit=2)))
    )
    sim.tick(5, Verdict.INCONCLUSIVE)
    sim.tick(5, Verdict.INCONCLUSIVE)
    assert sim.phase is Phase.DEGRADED and "RolledBack" in sim.reasons()


def test_errors_alone_never_promote():
    sim = started(Sim(spec(analysis=replace(POLICY, inconclusive_limit=1000))))
    for _ in range(50):
        sim.tick(5, Verdict.ERROR)
    assert sim.state.step_index == 0 and sim.phase is Phase.PROGRESSING
    assert sim.state.stable == "r1"


def test_a_metrics_outage_past_the_limit_holds_the_step_and_the_rollout_goes_on_by_itself():
    sim = started(Sim(spec(steps=(Step(StepKind.WEIGHT, 10, 5), Step(StepKind.WEIGHT, 30, 5)))))
    for _ in range(POLICY.inconclusive_limit * 4):  # an outage far longer than the limit
        sim.tick(5, Verdict.ERROR)
        assert sim.phase is Phase.PROGRESSING and sim.state.step_index == 0
        assert positive(sim.decision.weights) == {"r1": 90, "r2": 10}
        progressing = next(c for c in sim.state.conditions if c.type == "Progressing")
        assert progressing.reason == "AnalysisError" and "cannot be evaluated" in progressing.message
    assert "Paused" not in sim.reasons() and "AnalysisError" in sim.reasons()
    sim.tick(5, Verdict.PASS)  # the provider answers again: no resume needed
    assert sim.state.step_index == 1 and not sim.decision.clear_action


def test_a_metrics_outage_counts_towards_the_limit_when_it_rolls_back():
    sim = started(
        Sim(spec(analysis=replace(POLICY, on_inconclusive=OnInconclusive.ROLLBACK, inconclusive_limit=2)))
    )
    sim.tick(5, Verdict.ERROR)
    sim.tick(5, Verdict.ERROR)
    assert sim.phase is Phase.DEGRADED and "RolledBack" in sim.reasons()


def test_approval_step_pauses_until_resume_then_continues():
    sim = started(
        Sim(spec(steps=(Step(StepKind.WEIGHT, 10, 5), Step(StepKind.APPROVAL), Step(StepKind.WEIGHT, 60, 5))))
    )
    sim.tick(5, Verdict.PASS)
    assert sim.phase is Phase.PAUSED and sim.state.pause_reason == "AwaitingApproval"
    assert positive(sim.decision.weights) == {"r1": 90, "r2": 10}
    sim.tick(300)
    assert sim.phase is Phase.PAUSED
    d = sim.tick(action=Action.RESUME)
    assert sim.phase is Phase.PROGRESSING and sim.state.step_index == 2
    assert d.weights == {"r1": 40, "r2": 60}


def test_promote_full_skips_remaining_steps():
    sim = started(Sim(spec()))
    d = sim.tick(action=Action.PROMOTE_FULL)
    assert d.clear_action and d.weights == {"r1": 0, "r2": 100}
    sim.tick()
    assert sim.phase is Phase.HEALTHY and sim.state.stable == "r2"


def test_promote_passes_one_step_and_the_next_runs_its_own_checks():
    sim = started(Sim(spec()))  # step 1: shadow 50 % for 10 s
    d = sim.tick(action=Action.PROMOTE)
    assert d.clear_action and "PromotionRequested" in sim.reasons() and "StepCompleted" in sim.reasons()
    assert sim.state.step_index == 1 and sim.phase is Phase.PROGRESSING
    assert d.weights == {"r1": 80, "r2": 20} and d.shadow is None
    sim.tick()  # 20 % verified: the step clock starts
    sim.tick(5, Verdict.PASS)
    assert sim.state.step_index == 1  # the promoted rollout still honours the next step's duration
    sim.tick(action=Action.PROMOTE)
    sim.tick(action=Action.PROMOTE)  # the last step passed: the candidate goes to 100 %
    assert sim.decision.weights == {"r1": 0, "r2": 100}
    sim.tick()
    assert sim.phase is Phase.HEALTHY and sim.state.stable == "r2"


def test_promote_ends_an_inconclusive_hold_and_passes_the_step():
    sim = started(
        Sim(spec(steps=(Step(StepKind.WEIGHT, 10, 5), Step(StepKind.WEIGHT, 30, 5)))), clock_starts=False
    )
    sim.tick()
    for _ in range(3):
        sim.tick(5, Verdict.INCONCLUSIVE)
    assert sim.phase is Phase.PAUSED
    d = sim.tick(action=Action.PROMOTE)
    assert sim.phase is Phase.PROGRESSING and sim.state.step_index == 1
    assert d.weights == {"r1": 70, "r2": 30}


def test_promote_while_paused_by_spec_or_already_promoting_is_ignored():
    sim = started(Sim(spec()))
    sim.change(paused=True)
    sim.tick()
    sim.tick(action=Action.PROMOTE)
    assert sim.phase is Phase.PAUSED and sim.state.step_index == 0 and "ActionIgnored" in sim.reasons()
    sim.change(paused=False)
    sim.tick(action=Action.PROMOTE_FULL)
    sim.tick(action=Action.PROMOTE)
    assert "ActionIgnored" in sim.reasons()


def test_promote_from_approval_pause():
    sim = started(
        Sim(spec(steps=(Step(StepKind.APPROVAL), Step(StepKind.WEIGHT, 60, 5)))), clock_starts=False
    )
    assert sim.phase is Phase.PAUSED
    d = sim.tick(action=Action.PROMOTE)
    assert sim.phase is Phase.PROGRESSING and sim.state.step_index == 1
    assert d.weights == {"r1": 40, "r2": 60}  # the approval is passed, not the steps after it


def test_abort_rolls_back_and_retry_restarts():
    sim = started(Sim(spec()))
    d = sim.tick(action=Action.ABORT)
    assert sim.phase is Phase.DEGRADED and d.clear_action and positive(d.weights) == {"r1": 100}
    assert sim.state.message.startswith("Aborted")
    sim.tick()
    sim.tick(action=Action.RETRY)
    assert sim.phase is Phase.PROGRESSING and sim.state.candidate == "r2" and sim.state.step_index == 0
    assert sim.state.failures == 0
    assert sim.decision.replicas["r2"] == 2


def test_actions_that_do_not_apply_are_ignored_and_cleared():
    sim = Sim(spec())
    sim.healthy_on("r1")
    d = sim.tick(action=Action.PROMOTE)
    assert d.clear_action and "ActionIgnored" in sim.reasons() and sim.phase is Phase.HEALTHY
    d = sim.tick(action=Action.RETRY)
    assert "ActionIgnored" in sim.reasons()


def test_spec_paused_freezes_the_step_clock():
    sim = started(
        Sim(
            spec(
                steps=(Step(StepKind.WEIGHT, 10, 10), Step(StepKind.WEIGHT, 30, 10)),
                analysis=replace(POLICY, enabled=False),
            )
        )
    )
    sim.tick()  # shadow removed: weight 10 verified at T
    sim.tick(4)
    sim.change(paused=True)
    sim.tick()
    assert sim.phase is Phase.PAUSED
    sim.tick(100)
    assert sim.phase is Phase.PAUSED and sim.state.step_index == 0
    sim.change(paused=False)
    sim.tick()
    assert sim.phase is Phase.PROGRESSING and sim.state.step_index == 0
    sim.tick(5)
    assert sim.state.step_index == 0  # 4 + 5 s of 10 s counted
    sim.tick(1)
    assert sim.state.step_index == 1


def test_resume_action_does_not_override_spec_paused():
    sim = started(Sim(spec()))
    sim.change(paused=True)
    sim.tick()
    sim.tick(action=Action.RESUME)
    assert sim.phase is Phase.PAUSED and "ActionIgnored" in sim.reasons()


def test_spec_change_mid_rollout_restarts_towards_newest_from_zero():
    sim = started(Sim(spec()))
    sim.tick(5, Verdict.PASS)
    sim.tick(5, Verdict.PASS)
    sim.tick()
    assert positive(sim.weights) == {"r1": 80, "r2": 20}
    sim.change(target_revision="r3")
    d = sim.tick()
    assert "RolloutRestarted" in sim.reasons()
    assert sim.state.candidate == "r3" and sim.state.step_index == 0
    assert positive(d.weights) == {"r1": 100}
    assert d.replicas["r2"] == 2  # r2 still receives 20 % until the provider confirms
    d = sim.tick()
    assert d.replicas["r2"] == 0
    assert sim.state.failed_revision is None


def test_reverting_spec_to_stable_ends_the_rollout_at_once():
    sim = started(Sim(spec()))
    sim.tick(5, Verdict.PASS)
    sim.tick(5, Verdict.PASS)
    sim.tick()
    sim.change(target_revision="r1")
    d = sim.tick()
    assert sim.phase is Phase.HEALTHY and sim.state.candidate is None
    assert "RolloutReverted" in sim.reasons()
    assert positive(d.weights) == {"r1": 100}
    d = sim.tick()
    assert d.replicas["r2"] == 0


def test_reverting_spec_to_stable_clears_degraded():
    sim = started(Sim(spec()))
    sim.tick(action=Action.ABORT)
    sim.change(target_revision="r1")
    sim.tick()
    assert sim.phase is Phase.HEALTHY and sim.state.failed_revision is None
    assert {c.type: c.status for c in sim.state.conditions}["Degraded"] == "False"


def test_progress_deadline_rolls_back_a_candidate_that_never_gets_ready():
    sim = Sim(spec())
    sim.healthy_on("r1")
    sim.broken.add("r2")
    sim.change(target_revision="r2")
    sim.tick()
    sim.tick(59)
    assert sim.phase is Phase.PROGRESSING
    d = sim.tick(2)
    assert sim.phase is Phase.DEGRADED and sim.state.message.startswith("ProgressDeadlineExceeded")
    assert positive(d.weights) == {"r1": 100}


def test_first_deployment_never_ready_is_degraded_after_the_progress_deadline():
    sim = Sim(spec())  # progressDeadline 60s
    sim.broken.add("r1")
    d = sim.tick()
    assert sim.phase is Phase.PROGRESSING and d.weights == {"r1": 100}
    d = sim.tick(30)
    assert sim.phase is Phase.PROGRESSING and "waiting for revision r1" in sim.state.message
    assert d.requeue_after is not None
    d = sim.tick(29)  # 59s: still within the deadline
    assert sim.phase is Phase.PROGRESSING and "ProgressDeadlineExceeded" not in sim.reasons()
    d = sim.tick(2)  # 61s
    assert sim.phase is Phase.DEGRADED
    assert sim.state.message == (
        "ProgressDeadlineExceeded: first revision r1 not ready after 61s (progressDeadline 60s)"
    )
    assert sim.reasons() == ["ProgressDeadlineExceeded"]
    assert sim.decision.events[0].type == "Warning"
    conditions = {c.type: c for c in sim.state.conditions}
    assert conditions["Degraded"].status == "True"
    assert conditions["Degraded"].reason == "ProgressDeadlineExceeded"
    assert conditions["Ready"].status == "False" and conditions["Progressing"].status == "False"
    # nothing to roll back to: the revision keeps its replicas and all traffic, and is still watched
    assert d.weights == {"r1": 100} and d.replicas == {"r1": 2} and d.requeue_after is not None
    since = conditions["Degraded"].last_transition_time
    d = sim.tick(30)
    assert sim.phase is Phase.DEGRADED and sim.reasons() == []
    assert {c.type: c for c in sim.state.conditions}["Degraded"].last_transition_time == since
    # ready after all: Healthy, and the Degraded condition clears
    sim.broken.clear()
    d = sim.tick(5)
    assert sim.phase is Phase.HEALTHY and "Available" in sim.reasons()
    conditions = {c.type: c for c in sim.state.conditions}
    assert conditions["Degraded"].status == "False" and conditions["Ready"].status == "True"
    assert d.requeue_after is None


def test_first_deployment_with_unconfirmed_weights_is_degraded_after_the_progress_deadline():
    sim = Sim(spec())
    sim.provider_confirms = False
    sim.tick()
    sim.tick(61)
    assert sim.phase is Phase.DEGRADED
    assert "ready, but its traffic weight was not confirmed" in sim.state.message


def test_unconfirmed_weights_neither_start_a_step_nor_scale_down():
    sim = Sim(spec())
    sim.healthy_on("r1")
    sim.change(target_revision="r2")
    sim.tick()
    sim.provider_confirms = False
    sim.tick()
    sim.tick(20)
    assert sim.state.step_started_at is None and sim.decision.requeue_after == 1
    d = sim.tick(action=Action.ABORT)
    d = sim.tick(5)
    assert d.replicas["r2"] == 2  # never scaled down while its weight cannot be confirmed as 0
    sim.provider_confirms = True
    sim.weights = {"r1": 100, "r2": 0}
    d = sim.tick()
    assert d.replicas["r2"] == 0


def test_blue_green_ignores_weight_steps_and_switches_at_once():
    sim = started(Sim(spec(strategy=Strategy.BLUE_GREEN)))
    assert sim.decision.shadow == ("r2", 50)
    sim.tick(5, Verdict.PASS)
    d = sim.tick(5, Verdict.PASS)
    assert d.weights == {"r1": 0, "r2": 100} and d.shadow is None
    sim.tick()
    assert sim.phase is Phase.HEALTHY and sim.state.stable == "r2"


def test_immediate_switches_when_the_candidate_is_ready():
    sim = Sim(spec(strategy=Strategy.IMMEDIATE))
    sim.healthy_on("r1")
    sim.change(target_revision="r2")
    d = sim.tick()
    assert positive(d.weights) == {"r1": 100}  # candidate not ready yet: stable keeps everything
    d = sim.tick()
    assert d.weights == {"r1": 0, "r2": 100}
    sim.tick()
    assert sim.phase is Phase.HEALTHY and sim.state.stable == "r2"


def test_history_limit_deletes_the_oldest_retired_revisions():
    sim = Sim(spec(strategy=Strategy.IMMEDIATE, scale_down_delay=0))
    sim.healthy_on("r1")
    for rev in ("r2", "r3", "r4"):
        sim.change(target_revision=rev)
        for _ in range(4):
            sim.tick()
        assert sim.state.stable == rev
    assert set(sim.replicas) == {"r3", "r4"}
    assert sim.replicas == {"r3": 0, "r4": 2}


def test_revision_returning_as_target_is_reactivated():
    sim = Sim(spec(strategy=Strategy.IMMEDIATE, scale_down_delay=0, revision_history_limit=3))
    sim.healthy_on("r1")
    sim.change(target_revision="r2")
    for _ in range(4):
        sim.tick()
    assert sim.replicas == {"r1": 0, "r2": 2}
    sim.change(target_revision="r1")
    sim.tick()
    assert sim.replicas["r1"] == 2 and sim.state.candidate == "r1"


def test_conditions_keep_transition_time_while_unchanged():
    sim = Sim(spec())
    sim.healthy_on("r1")
    ready = {c.type: c for c in sim.state.conditions}["Ready"]
    sim.tick(100)
    assert {c.type: c for c in sim.state.conditions}[
        "Ready"
    ].last_transition_time == ready.last_transition_time
    sim.change(target_revision="r2")
    sim.tick()
    progressing = {c.type: c for c in sim.state.conditions}["Progressing"]
    assert progressing.status == "True" and progressing.last_transition_time == sim.now
    assert progressing.observed_generation == 2


def test_the_same_tick_replayed_gives_the_same_decision():
    sim = started(Sim(spec()))
    obs = Observation(
        revisions={"r1": RevisionHealth(2, 2), "r2": RevisionHealth(2, 2)}, verified_weights=dict(sim.weights)
    )
    a = decide(sim.spec, sim.state, obs, sim.now + timedelta(seconds=3))
    b = decide(sim.spec, sim.state, obs, sim.now + timedelta(seconds=3))
    assert a == b
