"""The plugin's pure rules: when an action has an effect, when `status` stops waiting, what it prints."""

from __future__ import annotations

from typing import Any

import pytest

from mlrollouts.cli import actions, wait

STEPS = [{"weight": 10, "duration": "1m"}, {"approval": {}}, {"weight": 50, "duration": "1m"}]


def mdep(phase: str, generation: int = 1, **status: Any) -> dict[str, Any]:
    return {
        "kind": "ModelDeployment",
        "metadata": {"name": "fraud", "generation": generation},
        "spec": {"rollout": {"steps": STEPS}},
        "status": {"phase": phase, "observedGeneration": 1, **status},
    }


def paused(reason: str) -> dict[str, Any]:
    obj = mdep("Paused", candidateRevision="r2", currentStep=1)
    obj["status"]["conditions"] = [{"type": "Progressing", "status": "Unknown", "reason": reason}]
    return obj


@pytest.mark.parametrize(
    ("action", "obj", "refused"),
    [
        ("promote", mdep("Healthy"), "no rollout is in progress (phase Healthy)"),
        ("promote", mdep("Progressing", candidateRevision="r2", currentStep=0), None),
        ("promote", mdep("Progressing", candidateRevision="r2", currentStep=3), "already being promoted"),
        ("promote-full", paused("AwaitingApproval"), None),
        ("promote", paused("PausedBySpec"), "`kubectl mlrollouts resume fraud` clears it"),
        ("abort", paused("PausedBySpec"), None),
        ("resume", paused("InconclusiveAnalysis"), None),
        ("resume", mdep("Progressing", candidateRevision="r2"), "not paused (phase Progressing)"),
        ("retry", mdep("Degraded", failedRevision="r2"), None),
        ("retry", mdep("Degraded", failedRevision="r2", candidateRevision="r3"), "no rolled-back revision"),
        ("abort", mdep("Degraded", failedRevision="r2"), "no rollout is in progress (phase Degraded)"),
    ],
)
def test_an_action_is_refused_exactly_when_the_operator_would_ignore_it(action, obj, refused):
    why = actions.refusal(action, obj, prefix="kubectl mlrollouts")
    assert why is None if refused is None else refused in (why or "")


def test_blue_green_and_immediate_count_only_the_steps_they_run():
    assert actions.step_count({"rollout": {"steps": STEPS, "strategy": "BlueGreen"}}) == 1
    assert actions.step_count({"rollout": {"steps": STEPS, "strategy": "Immediate"}}) == 0
    obj = mdep("Progressing", candidateRevision="r2", currentStep=1)
    obj["spec"]["rollout"]["strategy"] = "BlueGreen"
    assert "already being promoted" in (actions.refusal("promote", obj) or "")


def test_the_hint_names_the_command_as_the_user_typed_it():
    assert actions.command_prefix("/usr/local/bin/kubectl-mlrollouts") == "kubectl mlrollouts"
    assert actions.command_prefix("/venv/bin/mlrollouts") == "mlrollouts"


@pytest.mark.parametrize(
    ("obj", "outcome", "code"),
    [
        (mdep("Healthy"), True, 0),
        (mdep("Degraded"), False, 1),
        (mdep("Progressing"), None, 0),
        (mdep("Paused"), None, 0),
        (mdep("Healthy", generation=2), None, 0),  # the operator has not seen the new spec yet
        ({"kind": "Experiment", "metadata": {}, "status": {"phase": "Running"}}, True, 0),
        ({"kind": "CompositeModel", "metadata": {}, "status": {"phase": "Pending"}}, None, 0),
    ],
)
def test_status_is_done_when_the_phase_is_final_for_the_latest_generation(obj, outcome, code):
    assert wait.settled(obj) is outcome
    assert wait.exit_code(obj) == code


def test_progress_line_is_phase_step_message():
    obj = mdep("Progressing", message="canary at 10 %")
    assert (
        wait.progress_line(obj, "2 of 3: weight 10%")
        == "Progressing - step 2 of 3: weight 10% - canary at 10 %"
    )
    assert wait.progress_line(mdep("Healthy", generation=3)) == (
        "Healthy - waiting for the operator to observe generation 3"
    )
