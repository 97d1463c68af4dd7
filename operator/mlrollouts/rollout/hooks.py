"""Rollout hooks (``spec.rollout.hooks``): when each is due and what its result means (pure).

The controller calls the due hooks over HTTP in its observe stage and records every result in
``status.hooks`` (one record per hook, revision and step), so a hook is never called twice for the
same revision and step, across operator restarts too. The state machine reads the results through
:class:`HookGates`:

- ``pre-rollout`` hooks run once the candidate is ready, before its first step; a failure rolls back
  or holds (``onFailure``);
- ``step`` hooks gate a step: they run before the step's weight is set, and a failure holds the
  rollout (phase Paused, reason :data:`HOOK_HOLD`) until ``resume`` calls the gate again;
- ``post-rollout`` hooks run after a promotion or a rollback: queued as ``Pending`` records by the
  pass that ends the rollout, called in the next passes; their result changes nothing;
- ``load`` hooks send traffic to the candidate while each of their steps runs (:func:`load_plan`).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from mlrollouts.api.modeldeployment import HookFailure, HookRecord, HookResult, HookType, Phase, RolloutHook
from mlrollouts.rollout.model import Action, RolloutState, Step, StepKind

HOOK_HOLD = "HookFailed"
"""``pause_reason`` of a rollout held by a failed hook."""
MAX_RECORDS = 30
"""Records kept in status besides those of the revision in flight."""


class GateVerdict(enum.StrEnum):
    OPEN = "Open"
    WAIT = "Wait"
    """Not called yet: the controller calls it in the next pass."""
    HOLD = "Hold"
    ROLLBACK = "Rollback"


@dataclass(frozen=True)
class Gate:
    verdict: GateVerdict = GateVerdict.OPEN
    message: str = ""


OPEN = Gate()


@dataclass(frozen=True)
class HookGates:
    """What the gating hooks of the candidate allow, as recorded before this pass."""

    pre_rollout: Gate = OPEN
    steps: Mapping[int, Gate] = field(default_factory=dict)
    """Gate before each step, by step index (0 = first); a missing index is open."""

    def before_step(self, index: int) -> Gate:
        return self.steps.get(index, OPEN)


@dataclass(frozen=True)
class HookCall:
    """One HTTP call the controller makes now."""

    hook: RolloutHook
    revision: str
    step: int | None
    """Step number (1 = first) of a step hook."""

    def payload(self, namespace: str, name: str, phase: str) -> dict[str, object]:
        return {
            "name": name,
            "namespace": namespace,
            "revision": self.revision,
            "phase": phase,
            "step": self.step,
            "hook": self.hook.name,
            "type": self.hook.type.value,
            "metadata": dict(self.hook.metadata),
        }


@dataclass(frozen=True)
class LoadPlan:
    """Traffic a ``load`` hook sends to the candidate until ``until``."""

    hook: RolloutHook
    revision: str
    step: int
    until: datetime

    @property
    def key(self) -> tuple[str, str, int, datetime]:
        return (self.hook.name, self.revision, self.step, self.until)


def of_type(hooks: Sequence[RolloutHook], kind: HookType) -> list[RolloutHook]:
    return [h for h in hooks if h.type is kind]


def applies_to_step(hook: RolloutHook, number: int) -> bool:
    return hook.steps is None or number in hook.steps


def find(records: Sequence[HookRecord], name: str, revision: str, step: int | None) -> HookRecord | None:
    return next(
        (r for r in records if r.name == name and r.revision == revision and r.step == step),
        None,
    )


def _gate(
    hooks: Sequence[RolloutHook], records: Sequence[HookRecord], revision: str, step: int | None
) -> Gate:
    """The gate of ``hooks`` (all of one point): the first one not called yet or failed decides."""
    for hook in hooks:
        record = find(records, hook.name, revision, step)
        where = "before the first step" if step is None else f"before step {step}"
        if record is None or record.result is HookResult.PENDING:
            return Gate(GateVerdict.WAIT, f"calling {hook.type.value} hook {hook.name} {where}")
        if record.result is HookResult.FAILED:
            message = f"{hook.type.value} hook {hook.name} failed {where}: {record.message or 'no answer'}"
            rollback = hook.type is HookType.PRE_ROLLOUT and hook.on_failure is not HookFailure.HOLD
            return Gate(GateVerdict.ROLLBACK if rollback else GateVerdict.HOLD, message)
    return OPEN


def gates(
    hooks: Sequence[RolloutHook], state: RolloutState, records: Sequence[HookRecord], steps: int
) -> HookGates:
    """The gates of the rollout in flight; open when there is none or no gating hook."""
    candidate = state.candidate
    if candidate is None:
        return HookGates()
    pre = OPEN
    if state.step_index == 0 and state.step_started_at is None:
        pre = _gate(of_type(hooks, HookType.PRE_ROLLOUT), records, candidate, None)
    step_hooks = of_type(hooks, HookType.STEP)
    by_step = {
        index: _gate([h for h in step_hooks if applies_to_step(h, index + 1)], records, candidate, index + 1)
        for index in range(state.step_index, steps)
    }
    return HookGates(pre, {i: g for i, g in by_step.items() if g.verdict is not GateVerdict.OPEN})


def due_calls(
    hooks: Sequence[RolloutHook],
    state: RolloutState,
    records: Sequence[HookRecord],
    steps: int,
    candidate_ready: bool,
) -> list[HookCall]:
    """The gating hooks to call now: pre-rollout ones once the candidate is ready and before its first
    step, then the gates of the step about to start; never one already recorded."""
    candidate = state.candidate
    if candidate is None or state.phase is not Phase.PROGRESSING or state.promoting or not candidate_ready:
        return []
    if state.step_started_at is not None or state.step_index >= steps:
        return []
    if state.step_index == 0:
        pre = [
            HookCall(h, candidate, None)
            for h in of_type(hooks, HookType.PRE_ROLLOUT)
            if find(records, h.name, candidate, None) is None
        ]
        if (
            pre
            or _gate(of_type(hooks, HookType.PRE_ROLLOUT), records, candidate, None).verdict
            is not GateVerdict.OPEN
        ):
            return pre  # the step gates wait for every pre-rollout hook to pass
    number = state.step_index + 1
    return [
        HookCall(h, candidate, number)
        for h in of_type(hooks, HookType.STEP)
        if applies_to_step(h, number) and find(records, h.name, candidate, number) is None
    ]


def pending_calls(hooks: Sequence[RolloutHook], records: Sequence[HookRecord]) -> list[HookCall]:
    """Post-rollout calls queued by an earlier pass (their hook still in the spec)."""
    by_name = {h.name: h for h in of_type(hooks, HookType.POST_ROLLOUT)}
    return [
        HookCall(by_name[r.name], r.revision, r.step)
        for r in records
        if r.result is HookResult.PENDING and r.type is HookType.POST_ROLLOUT and r.name in by_name
    ]


def rollout_ended(before: RolloutState, after: RolloutState) -> str | None:
    """``Promoted`` or ``RolledBack`` when this decision ended the rollout of ``before.candidate``."""
    candidate = before.candidate
    if candidate is None or after.candidate == candidate:
        return None
    if after.stable == candidate:
        return "Promoted"
    if after.failed_revision == candidate:
        return "RolledBack"
    return None


def queue_post_rollout(
    hooks: Sequence[RolloutHook], before: RolloutState, after: RolloutState, now: datetime
) -> list[HookRecord]:
    """Pending records of the post-rollout hooks of a rollout this decision ended."""
    outcome = rollout_ended(before, after)
    if outcome is None:
        return []
    assert before.candidate is not None
    return [
        HookRecord(
            name=h.name,
            type=h.type,
            revision=before.candidate,
            result=HookResult.PENDING,
            at=now,
            message=f"queued after {outcome}",
        )
        for h in of_type(hooks, HookType.POST_ROLLOUT)
    ]


def cleared_for_retry(
    records: Sequence[HookRecord], state: RolloutState, action: Action | None
) -> list[HookRecord]:
    """``resume`` or ``promote`` of a rollout held by a failed hook: its failed gate records go, so
    the gate is called again."""
    held = state.phase is Phase.PAUSED and state.pause_reason == HOOK_HOLD
    if not held or action not in (Action.RESUME, Action.PROMOTE) or state.candidate is None:
        return list(records)
    return [r for r in records if not (r.revision == state.candidate and r.result is HookResult.FAILED)]


def with_results(records: Sequence[HookRecord], results: Sequence[HookRecord]) -> list[HookRecord]:
    """``records`` with ``results`` recorded (a result replaces the record of its hook, revision and step)."""
    keys = {(r.name, r.revision, r.step) for r in results}
    return [r for r in records if (r.name, r.revision, r.step) not in keys] + list(results)


def pruned(records: Sequence[HookRecord], candidate: str | None) -> list[HookRecord]:
    """The records of the revision in flight and pending ones, plus the latest others."""
    keep = [r for r in records if r.revision == candidate or r.result is HookResult.PENDING]
    others = [r for r in records if r not in keep]
    return [r for r in records if r in keep or r in others[-MAX_RECORDS:]]


def load_plan(
    hooks: Sequence[RolloutHook], state: RolloutState, steps: Sequence[Step], now: datetime
) -> LoadPlan | None:
    """The load to send now: during a running weight or shadow step with a duration, the first load
    hook of that step; none while the step waits for its weights, is paused, or has no end."""
    candidate = state.candidate
    if candidate is None or state.phase is not Phase.PROGRESSING or state.step_started_at is None:
        return None
    if state.promoting or state.step_index >= len(steps):
        return None
    step = steps[state.step_index]
    if step.kind is StepKind.APPROVAL or not step.duration:
        return None
    until = state.step_started_at + timedelta(seconds=step.duration)
    if now >= until:
        return None
    number = state.step_index + 1
    hook = next((h for h in of_type(hooks, HookType.LOAD) if applies_to_step(h, number)), None)
    return None if hook is None else LoadPlan(hook, candidate, number, until)
