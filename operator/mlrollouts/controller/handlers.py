"""kopf handlers: they only wire events to :func:`mlrollouts.controller.reconcile.reconcile`.

- create / update / resume: reconcile at once (an annotation change is an update too);
- a driver (kopf daemon) per resource drives in-flight rollouts: it sleeps until the time the last
  decision asked to be requeued, then reconciles; the resume handler schedules the first pass;
- nothing sleeps in a handler; failures become ``kopf.TemporaryError`` with a delay.

Passes over one resource are serialised by a per-resource lock (the driver runs beside the change
handlers).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

import kopf

from mlrollouts.controller import metrics
from mlrollouts.controller.config import OperatorConfig
from mlrollouts.controller.kube import Kube, KubeError
from mlrollouts.controller.reconcile import reconcile

GROUP = "mlrollouts.io"
VERSION = "v1alpha1"
PLURAL = "modeldeployments"
KOPF_PREFIX = f"kopf.{GROUP}"

log = logging.getLogger("mlrollouts.controller")


def settings(peering: str | None, priority: int = 0, namespaced: bool = False) -> kopf.OperatorSettings:
    """kopf settings: our own prefix for finalizers and progress, peering, watch timeouts.

    ``namespaced``: the operator watches given namespaces only, so kopf does not scan the cluster's
    CRDs and namespaces (which a namespaced Role cannot allow)."""
    settings = kopf.OperatorSettings()
    settings.scanning.disabled = namespaced
    settings.persistence.finalizer = f"{GROUP}/finalizer"
    # kopf ignores annotations under its own storage prefix when it diffs an object, so its storage
    # lives under a sub-domain: mlrollouts.io/action changes must still reach the update handler
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=KOPF_PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=KOPF_PREFIX, key="last-handled-configuration"
    )
    if peering:
        settings.peering.name = peering
        settings.peering.mandatory = False
        settings.peering.priority = priority
        settings.peering.clusterwide = False
    else:
        settings.peering.standalone = True
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.watching.connect_timeout = 10
    settings.watching.reconnect_backoff = 1.0
    settings.posting.level = logging.WARNING  # our own events only, not every handler success
    settings.execution.max_workers = 20
    settings.batching.worker_limit = (
        50  # bounds memory in a burst of changes; the API server is the limit anyway
    )
    settings.batching.idle_timeout = 30.0
    return settings


def _lock(memo: kopf.Memo) -> asyncio.Lock:
    lock = getattr(memo, "lock", None)
    if lock is None:
        lock = memo.lock = asyncio.Lock()
    return lock


async def _pass(body: kopf.Body, memo: kopf.Memo, logger: Any) -> None:
    kube: Kube = memo.kube
    config: OperatorConfig = memo.config
    async with _lock(memo):
        started = time.perf_counter()
        try:
            cache = memo.get("applied")
            if cache is None:
                cache = memo.applied = {}
            provider = memo.get("provider")
            if provider is None:
                provider = memo.provider = []
            outcome = await reconcile(
                dict(body), kube, config, applied_cache=cache, previous_provider=provider
            )
        except KubeError as exc:
            metrics.RECONCILE_ERRORS.labels("api").inc()
            if exc.status == 409:
                raise kopf.TemporaryError(f"conflict: {exc}", delay=1) from exc
            raise kopf.TemporaryError(str(exc), delay=5) from exc
        except Exception:
            metrics.RECONCILE_ERRORS.labels("internal").inc()
            raise
        finally:
            metrics.RECONCILE_SECONDS.observe(time.perf_counter() - started)
        for event in outcome.events:
            log.info("%s/%s %s: %s", body.metadata.namespace, body.metadata.name, event.reason, event.message)
            if event.type == "Warning":
                kopf.event(body, type="Warning", reason=event.reason, message=event.message)
            else:
                kopf.event(body, type="Normal", reason=event.reason, message=event.message)
        memo.next_at = time.monotonic() + outcome.requeue_after if outcome.requeue_after is not None else None
        _wake(memo).set()  # the driver recomputes its sleep


def _wake(memo: kopf.Memo) -> asyncio.Event:
    event = getattr(memo, "wake", None)
    if event is None:
        event = memo.wake = asyncio.Event()
    return event


def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    """Credentials from the in-cluster service account or the kubeconfig (via the kubernetes client)."""
    return kopf.login_via_client(**kwargs)


async def startup(memo: kopf.Memo, **_: Any) -> None:
    memo.kube = Kube.from_environment()


async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    kube = memo.get("kube")
    if kube is not None:
        await kube.close()


async def changed(body: kopf.Body, memo: kopf.Memo, logger: Any, **_: Any) -> None:
    await _pass(body, memo, logger)


async def drive(body: kopf.Body, memo: kopf.Memo, stopped: Any, logger: Any, **_: Any) -> None:
    """One driver per resource: it sleeps until the time the last decision asked to be woken up.

    An idle resource costs nothing but a re-check every ``tick`` seconds; change handlers wake the
    driver after their own pass so it follows the new schedule at once.
    """
    config: OperatorConfig = memo.config
    wake = _wake(memo)
    while not stopped:
        wake.clear()
        next_at = memo.get("next_at")
        now = time.monotonic()
        if next_at is not None and now >= next_at:
            try:
                await _pass(body, memo, logger)
            except kopf.TemporaryError as exc:
                logger.warning("reconcile failed, retrying in %ss: %s", exc.delay, exc)
                memo.next_at = time.monotonic() + float(exc.delay or 5)
            except Exception:
                logger.exception("reconcile failed, retrying in 5s")
                memo.next_at = time.monotonic() + 5.0
            continue
        timeout = config.tick if next_at is None else min(config.tick, next_at - now)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(wake.wait(), timeout=max(timeout, 0.0))


async def deleted(name: str, namespace: str | None, **_: Any) -> None:
    # children carry owner references: the garbage collector removes them
    metrics.forget(namespace or "", name)


def registry() -> kopf.OperatorRegistry:
    """A fresh registry with every handler of the operator."""
    reg = kopf.OperatorRegistry()
    kopf.on.login(registry=reg)(login)
    kopf.on.startup(registry=reg)(startup)
    kopf.on.cleanup(registry=reg)(cleanup)
    for decorator in (kopf.on.resume, kopf.on.create, kopf.on.update):
        decorator(GROUP, VERSION, PLURAL, registry=reg, backoff=2)(changed)
    kopf.daemon(GROUP, VERSION, PLURAL, registry=reg, cancellation_timeout=1.0, backoff=2)(drive)
    kopf.on.delete(GROUP, VERSION, PLURAL, optional=True, registry=reg)(deleted)
    return reg
