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
import logging
import time
from collections.abc import Sequence
from typing import Any

import kopf

from mlrollouts.controller import metrics
from mlrollouts.controller.compositemodel import CompositeModelController
from mlrollouts.controller.config import OperatorConfig
from mlrollouts.controller.experiment import ExperimentController
from mlrollouts.controller.kube import Kube, KubeError
from mlrollouts.controller.modeldeployment import ModelDeploymentController
from mlrollouts.controller.resource import KindController, ResourceState, run_pass
from mlrollouts.core.names import GROUP

KOPF_PREFIX = f"kopf.{GROUP}"
LOG_FORMATS = {"json": kopf.LogFormat.JSON, "text": kopf.LogFormat.FULL}

log = logging.getLogger("mlrollouts.controller")


def controllers() -> list[KindController]:
    """Every kind the operator reconciles."""
    return [ModelDeploymentController(), ExperimentController(), CompositeModelController()]


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
    s.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=KOPF_PREFIX, key="last-handled-configuration"
    )
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
    s.execution.max_workers = 20
    s.batching.worker_limit = 50  # bounds memory in a burst of changes; the API server is the limit
    s.batching.idle_timeout = 30.0
    return s


def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    """Credentials from the in-cluster service account or the kubeconfig (via the kubernetes client)."""
    return kopf.login_via_client(**kwargs)


async def startup(memo: kopf.Memo, **_: Any) -> None:
    memo.kube = Kube.from_environment()


async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    kube = memo.get("kube")
    if kube is not None:
        await kube.close()


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

    async def run(self, body: kopf.Body, memo: kopf.Memo) -> None:
        state = _state(memo)
        async with state.lock:
            started = time.perf_counter()
            try:
                outcome = await run_pass(self.controller, dict(body), memo.kube, memo.config, state)
            except KubeError as exc:
                metrics.RECONCILE_ERRORS.labels("api").inc()
                raise kopf.TemporaryError(str(exc), delay=1 if exc.status == 409 else 5) from exc
            except Exception:
                metrics.RECONCILE_ERRORS.labels("internal").inc()
                raise
            finally:
                metrics.RECONCILE_SECONDS.observe(time.perf_counter() - started)
            if outcome is None:  # the body predates our last write: look again shortly
                state.schedule(memo.config.poll)
                return
            namespace, name = body.metadata.namespace or "", body.metadata.name or ""
            self.controller.record(namespace, name, outcome)
            for event in outcome.events:
                log.info("%s/%s %s: %s", namespace, name, event.reason, event.message)
                kopf.event(body, type=event.type, reason=event.reason, message=event.message)
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
