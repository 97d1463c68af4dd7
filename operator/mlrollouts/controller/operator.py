"""The operator process: kopf settings, login, startup, and one set of handlers per kind.

Every kind is wired the same way; the handlers only call :func:`mlrollouts.controller.resource.run_pass`:

- create / update / resume: a pass at once (a change of the action annotation is an update too);
- a driver (kopf daemon) per resource sleeps until the time the last pass asked to be woken up, then
  runs a pass; an idle resource costs nothing;
- passes over one resource are serialised by its lock (the driver runs beside the change handlers);
- nothing sleeps in a handler; failures become ``kopf.TemporaryError`` with a delay.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import hashlib
import json
import logging
import os
import secrets
import socket
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, cast

import kopf

from mlrollouts.controller import admission, metrics
from mlrollouts.controller.compositemodel import CompositeModelController
from mlrollouts.controller.config import OperatorConfig
from mlrollouts.controller.experiment import ExperimentController
from mlrollouts.controller.kube import Kube, KubeError
from mlrollouts.controller.modeldeployment import ModelDeploymentController
from mlrollouts.controller.notifications import Notifier, notifications_for
from mlrollouts.controller.resource import KindController, ResourceState, action_waiting, run_pass
from mlrollouts.core.events import COMPONENT, Event, event_object
from mlrollouts.core.names import GROUP

KOPF_PREFIX = f"kopf.{GROUP}"
LOG_FORMATS = {"json": kopf.LogFormat.JSON, "text": kopf.LogFormat.FULL}
ACTION_RECHECK_SECONDS = 2.0
"""How long an action annotation may wait on the live body before the driver runs a pass for it."""

log = logging.getLogger("mlrollouts.controller")


def controllers() -> list[KindController]:
    """Every kind the operator reconciles."""
    return [ModelDeploymentController(), ExperimentController(), CompositeModelController()]


class DigestDiffBaseStorage(kopf.AnnotationsDiffBaseStorage):
    """kopf's record of the last handled spec, kept as a digest rather than a copy of the spec.

    The handlers never read kopf's diff (every pass reads the whole resource), so a digest tells
    kopf all it needs: unchanged (the stored essence is the current one) or changed. It lives in an
    annotation, so it survives operator restarts, and it is one short line in ``kubectl describe``.
    The full-copy annotation of earlier versions is removed the next time the digest is stored."""

    LEGACY_KEY = "last-handled-configuration"

    def __init__(self, prefix: str) -> None:
        super().__init__(prefix=prefix, key="handled-spec-digest")
        self.legacy = kopf.AnnotationsDiffBaseStorage(prefix=prefix, key=self.LEGACY_KEY)

    @staticmethod
    def digest(essence: Any) -> str:
        return hashlib.sha256(json.dumps(essence, sort_keys=True, default=str).encode()).hexdigest()[:32]

    def build(self, *, body: kopf.Body, extra_fields: Any = None) -> Any:
        essence = super().build(body=body, extra_fields=extra_fields)
        self.remove_annotations(essence, set(self.legacy.make_keys(self.LEGACY_KEY, body=body)))
        self.remove_empty_stanzas(essence)
        return essence

    def fetch(self, *, body: kopf.Body) -> Any:
        stored = next(
            (v for k in self.make_keys(self.key, body=body) if (v := body.metadata.annotations.get(k))), None
        )
        if stored is None:
            return None
        essence = self.build(body=body)
        # a changed spec reads as an empty last-handled state: any difference makes it an update
        return essence if stored.strip() == self.digest(essence) else cast(Any, {})

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: Any) -> None:
        for key in self.make_keys(self.key, body=body):
            patch.metadata.annotations[key] = self.digest(essence)
        for key in self.legacy.make_keys(self.LEGACY_KEY, body=body):
            if key in body.metadata.annotations:
                patch.metadata.annotations[key] = None
        self._store_marker(prefix=self.prefix, patch=patch, body=body)


def instance_name() -> str:
    """The operator's pod (or host) name: ``reportingInstance`` of its events."""
    return os.environ.get("POD_NAME") or socket.gethostname()


async def post_events(kube: Any, body: dict[str, Any], events: Sequence[Event], instance: str) -> int:
    """Post ``events`` about ``body`` as the operator (not as kopf); returns how many were posted.
    Events are auxiliary: a failure is logged and the pass goes on."""
    posted = 0
    for event in events:
        obj = event_object(event, body, datetime.now(UTC), instance, secrets.token_hex(8))
        try:
            await kube.create(obj)
            posted += 1
        except KubeError as exc:
            log.warning("event %s not posted: %s", event.reason, exc)
    return posted


def settings(peering: str | None, priority: int = 0, namespaced: bool = False) -> kopf.OperatorSettings:
    """kopf settings: our own prefix for finalizers and progress, peering, watch timeouts.

    ``namespaced``: the operator watches given namespaces only, so kopf does not scan the cluster's
    CRDs and namespaces (which a namespaced Role cannot allow)."""
    s = kopf.OperatorSettings()
    s.scanning.disabled = namespaced
    s.persistence.finalizer = f"{GROUP}/finalizer"
    # kopf ignores annotations under its own storage prefix when it diffs an object, so its storage
    # lives under a sub-domain: mlrollouts.io/action changes must still reach the update handler
    s.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=KOPF_PREFIX)
    s.persistence.diffbase_storage = DigestDiffBaseStorage(prefix=KOPF_PREFIX)
    if peering:
        s.peering.name = peering
        s.peering.mandatory = False
        s.peering.priority = priority
        s.peering.clusterwide = False
    else:
        s.peering.standalone = True
    s.watching.server_timeout = 300
    s.watching.client_timeout = 330
    s.watching.connect_timeout = 10
    s.watching.reconnect_backoff = 1.0
    s.posting.level = logging.WARNING  # our own events only, not every handler success
    # kopf's own events (a handler that keeps failing) come from the operator too
    s.posting.reporting_component = COMPONENT
    s.posting.reporting_instance = instance_name()
    s.posting.event_name_prefix = f"{COMPONENT}-"
    s.execution.max_workers = 20
    s.batching.worker_limit = 50  # bounds memory in a burst of changes; the API server is the limit
    # an idle worker keeps its slot until this timeout: at 30 s, 50 slots passed fewer than two new
    # resources a second after a start or a burst, and changes to the others queued behind them
    s.batching.idle_timeout = 5.0
    admission.configure(s, admission.WebhookSettings.from_environment())
    return s


def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    """Credentials from the in-cluster service account or the kubeconfig (via the kubernetes client)."""
    return kopf.login_via_client(**kwargs)


async def startup(memo: kopf.Memo, **_: Any) -> None:
    memo.kube = Kube.from_environment()
    memo.notifier = Notifier(memo.config.notification_sinks)
    memo.notifier.start()


async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    kube = memo.get("kube")
    if kube is not None:
        await kube.close()
    notifier = memo.get("notifier")
    if notifier is not None:
        await notifier.close()


def _state(memo: kopf.Memo) -> ResourceState:
    """The per-resource state: kopf gives every resource its own copy of the operator's memo."""
    state = memo.get("resource_state")
    if state is None:
        state = memo.resource_state = ResourceState()
    return state


class Handlers:
    """The kopf handlers of one kind."""

    def __init__(self, controller: KindController) -> None:
        self.controller = controller

    async def run(self, body: kopf.Body | dict[str, Any], memo: kopf.Memo) -> None:
        state = _state(memo)
        async with state.lock:
            # a daemon's body is a live view: the status this pass started from is copied before it moves
            seen = {**body, "status": copy.deepcopy(dict(body.get("status") or {}))}
            started = time.perf_counter()
            state.last_pass_at = time.monotonic()
            try:
                outcome = await run_pass(self.controller, dict(body), memo.kube, memo.config, state)
            except KubeError as exc:
                metrics.RECONCILE_ERRORS.labels("api").inc()
                delay = 1 if exc.status == 409 else 5
                # the driver retries too: kopf's own retry may never come (a failed write of its
                # progress waits for the object's next event)
                state.schedule(delay)
                raise kopf.TemporaryError(str(exc), delay=delay) from exc
            except Exception:
                metrics.RECONCILE_ERRORS.labels("internal").inc()
                raise
            finally:
                metrics.RECONCILE_SECONDS.observe(time.perf_counter() - started)
            if outcome is None:  # the body predates our last write: look again shortly
                state.schedule(memo.config.poll)
                return
            meta = body.get("metadata") or {}
            namespace, name = meta.get("namespace") or "", meta.get("name") or ""
            self.controller.record(namespace, name, outcome)
            for event in outcome.events:
                log.info("%s/%s %s: %s", namespace, name, event.reason, event.message)
            await post_events(memo.kube, dict(body), outcome.events, memo.get("instance") or instance_name())
            if (notifier := memo.get("notifier")) is not None:  # queued: delivery never holds the pass
                notifier.submit(notifications_for(seen, outcome.status, outcome.events, datetime.now(UTC)))
            state.schedule(outcome.requeue_after)

    async def changed(self, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
        await self.run(body, memo)

    async def drive(self, body: kopf.Body, memo: kopf.Memo, stopped: Any, logger: Any, **_: Any) -> None:
        """Sleep until the last pass asked to be woken up; change handlers wake the driver after
        their own pass so it follows the new schedule at once."""
        config: OperatorConfig = memo.config
        state = _state(memo)
        while not stopped:
            state.wake.clear()
            now = time.monotonic()
            if action_waiting(body) and now - state.last_pass_at >= ACTION_RECHECK_SECONDS:
                # an action annotation no pass has taken yet (its change event lost, or its pass failed
                # where kopf does not retry): act on the object as the API server has it now, never on
                # a live body that may lag behind a status already written
                await self.run_fresh(body, memo, logger)
                continue
            if state.next_at is not None and now >= state.next_at:
                try:
                    await self.run(body, memo)
                except kopf.TemporaryError as exc:
                    logger.warning("reconcile failed, retrying in %ss: %s", exc.delay, exc)
                    state.schedule(float(exc.delay or 5))
                except Exception:
                    logger.exception("reconcile failed, retrying in 5s")
                    state.schedule(5.0)
                continue
            timeout = config.tick if state.next_at is None else min(config.tick, state.next_at - now)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(state.wake.wait(), timeout=max(timeout, 0.0))

    async def run_fresh(self, body: kopf.Body, memo: kopf.Memo, logger: Any) -> None:
        """A pass over the object read from the API server now, when it still waits for an action."""
        state = _state(memo)
        state.last_pass_at = time.monotonic()
        kind = self.controller.kind
        try:
            fresh = await memo.kube.get(
                kind.api_version, kind.kind, body.metadata.namespace, body.metadata.name
            )
            if fresh is not None and action_waiting(fresh):
                await self.run(fresh, memo)
        except (KubeError, kopf.TemporaryError) as exc:
            logger.warning("action pass failed, retrying: %s", exc)

    async def deleted(self, name: str, namespace: str | None, **_: Any) -> None:
        # children carry owner references: the garbage collector removes them
        self.controller.forget(namespace or "", name)

    def register(self, registry: kopf.OperatorRegistry) -> None:
        kind = self.controller.kind
        group, version = kind.api_version.split("/")
        for decorator in (kopf.on.resume, kopf.on.create, kopf.on.update):
            decorator(group, version, kind.plural, registry=registry, backoff=2, id="changed")(self.changed)
        kopf.daemon(
            group, version, kind.plural, registry=registry, cancellation_timeout=1.0, backoff=2, id="drive"
        )(self.drive)
        kopf.on.delete(group, version, kind.plural, optional=True, registry=registry, id="deleted")(
            self.deleted
        )


def registry(kinds: Sequence[KindController] | None = None) -> kopf.OperatorRegistry:
    """A fresh registry with the operator-wide handlers and those of ``kinds`` (default: all)."""
    reg = kopf.OperatorRegistry()
    kopf.on.login(registry=reg)(login)
    kopf.on.startup(registry=reg)(startup)
    kopf.on.cleanup(registry=reg)(cleanup)
    for controller in controllers() if kinds is None else kinds:
        Handlers(controller).register(reg)
    admission.register(reg, admission.WebhookSettings.from_environment())
    return reg


def configure_logging(level: str = "INFO", log_format: str = "text") -> None:
    """Root logging for the operator and kopf: ``json`` (one object a line) or ``text``."""
    kopf.configure(log_format=LOG_FORMATS[log_format], log_refkey="object" if log_format == "json" else None)
    logging.getLogger().setLevel(level.upper())
    logging.getLogger("httpx").setLevel(logging.WARNING)
    if level.upper() != "DEBUG":
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)  # per-pass "succeeded" lines


def run(
    config: OperatorConfig,
    namespaces: list[str] | None = None,
    metrics_port: int | None = None,
    peering: str | None = None,
    priority: int = 0,
    liveness: str | None = None,
    log_level: str = "INFO",
    log_format: str = "text",
    kinds: Sequence[KindController] | None = None,
) -> None:
    """Run the operator until interrupted."""
    configure_logging(log_level, log_format)
    if metrics_port is not None:
        metrics.serve(metrics_port)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(
            kopf.operator(
                clusterwide=not namespaces,
                namespaces=namespaces or [],
                memo=kopf.Memo(config=config),
                registry=registry(kinds),
                settings=settings(peering, priority, namespaced=bool(namespaces)),
                standalone=peering is None,
                peering_name=peering,
                priority=priority,
                liveness_endpoint=liveness,
            )
        )
