"""The Progressing condition names why a canary stands still while its analysis cannot be evaluated."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from mlrollouts.api import Phase
from mlrollouts.core.verdicts import CheckOutcome, Verdict
from mlrollouts.rollout import (
    AnalysisPolicy,
    AnalysisRun,
    Observation,
    RevisionHealth,
    RolloutSpec,
    RolloutState,
    Step,
    StepKind,
    decide,
)

T0 = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
UNREACHABLE = (
    "query failed: cannot reach Prometheus at http://prometheus:9090: [Errno 111] Connection refused"
)


def spec(revision: str) -> RolloutSpec:
    return RolloutSpec(
        target_revision=revision,
        replicas=1,
        steps=(Step(StepKind.WEIGHT, 20, 10), Step(StepKind.WEIGHT, 50, 10)),
        analysis=AnalysisPolicy(interval=5, failure_limit=2, inconclusive_limit=50),
        scale_down_delay=30,
        progress_deadline=600,
    )


def progressing(state: RolloutState):
    return next(c for c in state.conditions if c.type == "Progressing")


def test_error_runs_set_the_reason_and_a_pass_clears_it():
    state, now, weights = RolloutState(), T0, None
    current = spec("r1")

    def tick(seconds: float = 0, verdict: Verdict | None = None, message: str = "") -> RolloutState:
        nonlocal state, now, weights
        now += timedelta(seconds=seconds)
        run = AnalysisRun(now, (CheckOutcome("errors", verdict, message=message),)) if verdict else None
        ready = {rev: RevisionHealth(1, 1) for rev in ("r1", "r2")}
        decision = decide(current, state, Observation(ready, verified_weights=weights, analysis=run), now)
        state, weights = decision.state, dict(decision.weights)
        return state

    for _ in range(3):
        tick()
    assert state.phase is Phase.HEALTHY
    current = spec("r2")
    for _ in range(3):
        tick()
    assert state.phase is Phase.PROGRESSING and progressing(state).reason == "RolloutInProgress"
    for _ in range(4):  # longer than failureLimit: never a failure, never a pass
        tick(5, Verdict.ERROR, UNREACHABLE)
        condition = progressing(state)
        assert (condition.status, condition.reason) == ("True", "AnalysisError")
        assert "cannot reach Prometheus at http://prometheus:9090" in condition.message
        assert state.step_index == 0 and state.phase is Phase.PROGRESSING
    tick(5, Verdict.PASS)
    assert progressing(state).reason == "RolloutInProgress"
    assert "Prometheus" not in progressing(state).message
