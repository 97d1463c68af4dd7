"""Rollout hooks, tick by tick: when each hook is due, and what its recorded result does to the rollout."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from mlrollouts.api.modeldeployment import HookRecord, HookResult, HookType, Phase, RolloutHook
from mlrollouts.rollout import (
    Action,
    Observation,
    RevisionHealth,
    RolloutSpec,
    RolloutState,
    Step,
    StepKind,
    decide,
)
from mlrollouts.rollout.hooks import (
    HOOK_HOLD,
    GateVerdict,
    cleared_for_retry,
    due_calls,
    gates,
    load_plan,
    pending_calls,
    queue_post_rollout,
    with_results,
)
from mlrollouts.rollout.model import AnalysisPolicy

T0 = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
STEPS = (Step(StepKind.WEIGHT, 20, 10), Step(StepKind.WEIGHT, 50, 10))
SPEC = RolloutSpec(target_revision="new", steps=STEPS, analysis=AnalysisPolicy(enabled=False))
PRE = RolloutHook(name="smoke", type=HookType.PRE_ROLLOUT, url="http://t/smoke")
HOLD_PRE = RolloutHook(name="smoke", type=HookType.PRE_ROLLOUT, url="http://t/smoke", on_failure="Hold")
GATE = RolloutHook(name="confirm", type=HookType.STEP, url="http://t/confirm", steps=[2])
POST = RolloutHook(name="tell", type=HookType.POST_ROLLOUT, url="http://t/tell")
LOAD = RolloutHook(name="warm", type=HookType.LOAD, rate=5, body={"inputs": []}, steps=[1])


def rolling(**changes) -> RolloutState:
    base = RolloutState(
        phase=Phase.PROGRESSING,
        stable="old",
        candidate="new",
        desired_weights={"old": 100, "new": 0},
        verified_weights={"old": 100, "new": 0},
        rollout_started_at=T0,
    )
    return RolloutState(**{**base.__dict__, **changes})


def record(hook: RolloutHook, result: HookResult, step: int | None = None) -> HookRecord:
    return HookRecord(name=hook.name, type=hook.type, revision="new", step=step, result=result, at=T0)


def tick(state: RolloutState, hooks, records, now=T0, weights=None):
    observation = Observation(
        revisions={"old": RevisionHealth(1, 1), "new": RevisionHealth(1, 1)},
        verified_weights=weights or state.desired_weights,
        hook_gates=gates(hooks, state, records, len(STEPS)),
    )
    return decide(SPEC, state, observation, now)


def test_pre_rollout_is_called_once_the_candidate_is_ready_and_only_once():
    state = rolling()
    assert due_calls([PRE, GATE], state, [], 2, candidate_ready=False) == []
    (call,) = due_calls([PRE, GATE], state, [], 2, candidate_ready=True)
    assert (call.hook.name, call.revision, call.step) == ("smoke", "new", None)
    assert due_calls([PRE], state, [record(PRE, HookResult.FAILED)], 2, candidate_ready=True) == []


def test_no_traffic_moves_before_the_pre_rollout_hook_passed():
    state = rolling()
    waiting = tick(state, [PRE], [])
    assert waiting.weights["new"] == 0 and "calling pre-rollout hook smoke" in waiting.state.message
    assert waiting.requeue_after is not None
    passed = tick(state, [PRE], [record(PRE, HookResult.SUCCEEDED)])
    assert passed.weights == {"old": 80, "new": 20}


def test_failed_pre_rollout_hook_rolls_back_or_holds():
    rolled_back = tick(rolling(), [PRE], [record(PRE, HookResult.FAILED)])
    assert rolled_back.state.phase is Phase.DEGRADED and rolled_back.state.failed_revision == "new"
    assert rolled_back.weights["new"] == 0
    assert [e.reason for e in rolled_back.events] == ["RolledBack"]
    held = tick(rolling(), [HOLD_PRE], [record(HOLD_PRE, HookResult.FAILED)])
    assert held.state.phase is Phase.PAUSED and held.state.pause_reason == HOOK_HOLD


def test_step_gate_is_due_after_the_previous_step_and_holds_on_failure():
    at_step_2 = rolling(
        step_index=1, desired_weights={"old": 80, "new": 20}, verified_weights={"old": 80, "new": 20}
    )
    assert due_calls([GATE], rolling(), [], 2, candidate_ready=True) == []  # the gate guards step 2 only
    (call,) = due_calls([GATE], at_step_2, [], 2, candidate_ready=True)
    assert call.step == 2
    waiting = tick(at_step_2, [GATE], [])
    assert waiting.weights == {"old": 80, "new": 20}
    held = tick(at_step_2, [GATE], [record(GATE, HookResult.FAILED, 2)])
    assert held.state.phase is Phase.PAUSED and held.weights == {"old": 80, "new": 20}
    assert "confirm failed before step 2" in held.state.message
    opened = tick(at_step_2, [GATE], [record(GATE, HookResult.SUCCEEDED, 2)])
    assert opened.weights == {"old": 50, "new": 50}


def test_step_one_ends_and_waits_at_the_gate_of_step_two_in_the_same_tick():
    running = rolling(
        desired_weights={"old": 80, "new": 20}, verified_weights={"old": 80, "new": 20}, step_started_at=T0
    )
    ended = tick(running, [GATE], [], now=T0 + timedelta(seconds=11))
    assert ended.state.step_index == 1 and ended.weights == {"old": 80, "new": 20}
    assert "calling step hook confirm before step 2" in ended.state.message


def test_resume_of_a_held_gate_calls_it_again():
    held = rolling(phase=Phase.PAUSED, pause_reason=HOOK_HOLD, step_index=1)
    failed = [record(GATE, HookResult.FAILED, 2), record(PRE, HookResult.SUCCEEDED)]
    assert cleared_for_retry(failed, held, None) == failed
    cleared = cleared_for_retry(failed, held, Action.RESUME)
    assert [r.name for r in cleared] == ["smoke"]
    progressing = rolling(step_index=1)
    assert [c.hook.name for c in due_calls([PRE, GATE], progressing, cleared, 2, candidate_ready=True)] == [
        "confirm"
    ]


@pytest.mark.parametrize(
    ("after", "outcome"),
    [
        (RolloutState(phase=Phase.HEALTHY, stable="new"), "queued after Promoted"),
        (RolloutState(phase=Phase.DEGRADED, stable="old", failed_revision="new"), "queued after RolledBack"),
        (RolloutState(phase=Phase.PROGRESSING, stable="old", candidate="newer"), None),
    ],
)
def test_post_rollout_hooks_are_queued_when_a_rollout_ends(after, outcome):
    queued = queue_post_rollout([PRE, POST], rolling(), after, T0)
    if outcome is None:
        assert queued == []
        return
    (pending,) = queued
    assert (pending.name, pending.revision, pending.result, pending.message) == (
        "tell",
        "new",
        HookResult.PENDING,
        outcome,
    )
    (call,) = pending_calls([POST], queued)
    assert call.revision == "new"
    done = with_results(queued, [record(POST, HookResult.SUCCEEDED)])
    assert pending_calls([POST], done) == []


def test_load_runs_only_while_its_step_runs():
    running = rolling(desired_weights={"old": 80, "new": 20}, step_started_at=T0)
    plan = load_plan([LOAD], running, STEPS, T0 + timedelta(seconds=3))
    assert plan is not None and plan.step == 1 and plan.until == T0 + timedelta(seconds=10)
    assert load_plan([LOAD], running, STEPS, T0 + timedelta(seconds=10)) is None  # step over
    assert load_plan([LOAD], rolling(step_index=1, step_started_at=T0), STEPS, T0) is None  # not its step
    assert load_plan([LOAD], rolling(), STEPS, T0) is None  # weights not confirmed: not started
    assert gates([LOAD, POST], rolling(), [], 2).pre_rollout.verdict is GateVerdict.OPEN
