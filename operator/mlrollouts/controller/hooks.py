"""Rollout hooks over HTTP: the calls :mod:`mlrollouts.rollout.hooks` says are due, and the load
generator of ``load`` hooks.

A call is a POST of the hook's JSON payload; a 2xx answer within the hook's ``timeout`` is success,
anything else (another status, no answer, a refused connection) is failure, with the reason recorded.
The load generator is a background task per resource: it sends ``rate`` requests a second (at most
:data:`MAX_IN_FLIGHT` unanswered at a time) to the candidate's Service until the step's end, and is
replaced or stopped by the pass that sees the step change. It is traffic, not state: a restarted
operator starts it again from the status.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx

from mlrollouts.api.modeldeployment import HookRecord, HookResult, ModelDeployment, Strategy
from mlrollouts.builders import revision_name
from mlrollouts.core.durations import parse_duration
from mlrollouts.rollout.hooks import (
    HookCall,
    HookGates,
    LoadPlan,
    cleared_for_retry,
    due_calls,
    gates,
    load_plan,
    pending_calls,
    pruned,
    queue_post_rollout,
    with_results,
)
from mlrollouts.rollout.model import Action, RolloutState, Step

MAX_IN_FLIGHT = 20
MAX_ANSWER = 256
"""Characters of a failed hook's answer kept in its record."""

log = logging.getLogger("mlrollouts.hooks")


async def call_hook(
    client: httpx.AsyncClient, call: HookCall, namespace: str, name: str, phase: str, now: datetime
) -> HookRecord:
    """Make one call; the record says how it went."""
    hook = call.hook
    assert hook.url is not None
    timeout = parse_duration(hook.timeout)
    try:
        response = await client.post(hook.url, json=call.payload(namespace, name, phase), timeout=timeout)
    except httpx.TimeoutException:
        result, message = HookResult.FAILED, f"no answer within {timeout:g}s"
    except httpx.HTTPError as exc:
        result, message = HookResult.FAILED, f"{type(exc).__name__}: {exc}".rstrip(": ")
    else:
        if response.is_success:
            result, message = HookResult.SUCCEEDED, f"HTTP {response.status_code}"
        else:
            answer = response.text[:MAX_ANSWER].strip()
            result, message = (
                HookResult.FAILED,
                f"HTTP {response.status_code}" + (f": {answer}" if answer else ""),
            )
    return HookRecord(
        name=hook.name,
        type=hook.type,
        revision=call.revision,
        step=call.step,
        result=result,
        at=now,
        message=message,
    )


async def call_hooks(
    calls: Sequence[HookCall], namespace: str, name: str, phase: str, now: datetime
) -> list[HookRecord]:
    """Make ``calls`` in order (a gate's hooks are called in their spec order)."""
    if not calls:
        return []
    records = []
    async with httpx.AsyncClient() as client:
        for call in calls:
            record = await call_hook(client, call, namespace, name, phase, now)
            log.info(
                "%s/%s %s hook %s (%s): %s",
                namespace,
                name,
                call.hook.type.value,
                call.hook.name,
                call.revision,
                record.message,
            )
            records.append(record)
    return records


@dataclass
class LoadGenerator:
    """Sends one ``load`` hook's requests to ``url`` until ``plan.until`` (or :meth:`stop`)."""

    plan: LoadPlan
    url: str
    sent: int = 0
    failed: int = 0
    task: asyncio.Task[None] | None = field(default=None, repr=False)

    def start(self) -> None:
        self.task = asyncio.create_task(self._run(), name=f"load-{self.plan.hook.name}-{self.plan.revision}")

    async def _run(self) -> None:
        hook = self.plan.hook
        assert hook.rate is not None
        interval = 1.0 / hook.rate
        in_flight: set[asyncio.Task[None]] = set()
        loop = asyncio.get_running_loop()
        async with httpx.AsyncClient(timeout=parse_duration(hook.timeout)) as client:
            next_at = loop.time()
            try:
                while datetime.now(UTC) < self.plan.until:
                    if len(in_flight) < MAX_IN_FLIGHT:  # a slow candidate gets fewer requests, not a pile-up
                        task = asyncio.create_task(self._send(client, hook.body))
                        in_flight.add(task)
                        task.add_done_callback(in_flight.discard)
                    next_at += interval
                    await asyncio.sleep(max(next_at - loop.time(), 0.0))
            finally:
                for task in list(in_flight):
                    task.cancel()
                await asyncio.gather(*in_flight, return_exceptions=True)

    async def _send(self, client: httpx.AsyncClient, body: Any) -> None:
        try:
            response = await client.post(self.url, json=body)
            self.sent += 1
            if not response.is_success:
                self.failed += 1
        except httpx.HTTPError:
            self.sent += 1
            self.failed += 1

    @property
    def running(self) -> bool:
        return self.task is not None and not self.task.done()

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task


async def follow_load(memory: dict[str, Any], plan: LoadPlan | None, url: str | None) -> LoadGenerator | None:
    """Keep the resource's load generator in line with ``plan``: start, keep, replace or stop it."""
    current: LoadGenerator | None = memory.get("load")
    if current is not None and (plan is None or current.plan.key != plan.key or not current.running):
        await current.stop()
        memory.pop("load", None)
        current = None
    if current is None and plan is not None and url is not None:
        current = LoadGenerator(plan, url)
        current.start()
        memory["load"] = current
    return current


async def gate_hooks(
    md: ModelDeployment,
    state: RolloutState,
    candidate_ready: bool,
    action: Action | None,
    now: datetime,
) -> tuple[list[HookRecord], HookGates | None]:
    """Call the gating hooks due before this pass decides; the records to keep and the gates."""
    records = list(md.status.hooks) if md.status else []
    hooks = md.spec.rollout.hooks
    if not hooks:
        return records, None
    steps = len(md.spec.rollout.steps) if md.spec.rollout.strategy is not Strategy.IMMEDIATE else 0
    records = cleared_for_retry(records, state, action)
    calls = due_calls(hooks, state, records, steps, candidate_ready)
    meta = md.metadata
    results = await call_hooks(calls, meta.namespace or "", meta.name or "", state.phase.value, now)
    records = with_results(records, results)
    return records, gates(hooks, state, records, steps)


def queue_post_hooks(
    md: ModelDeployment, records: list[HookRecord], before: RolloutState, after: RolloutState, now: datetime
) -> list[HookRecord]:
    """The records with the post-rollout calls of a rollout this pass ended queued (written to status
    before they are made, so a restart still makes them)."""
    queued = queue_post_rollout(md.spec.rollout.hooks, before, after, now)
    return pruned(with_results(records, queued), after.candidate)


async def post_hooks(
    md: ModelDeployment, records: list[HookRecord], phase: str, now: datetime
) -> list[HookRecord]:
    """Make the queued post-rollout calls."""
    calls = pending_calls(md.spec.rollout.hooks, records)
    meta = md.metadata
    return with_results(records, await call_hooks(calls, meta.namespace or "", meta.name or "", phase, now))


async def drive_load(
    md: ModelDeployment,
    state: RolloutState,
    steps: Sequence[Step],
    memory: dict[str, Any],
    upstream: str,
    now: datetime,
) -> LoadGenerator | None:
    """Start, keep or stop the load of a ``load`` hook for the step in progress."""
    plan = load_plan(md.spec.rollout.hooks, state, steps, now) if md.spec.rollout.hooks else None
    url = None
    if plan is not None:
        service = upstream.format(
            service=revision_name(md.metadata.name or "", plan.revision), namespace=md.metadata.namespace
        )
        url = service.rstrip("/") + (plan.hook.path or f"/v2/models/{md.served_model_name}/infer")
    return await follow_load(memory, plan, url)
