"""The process kubelet: plays kubelet, ReplicaSet, Job and endpoints controllers on one machine.

For every Deployment it keeps ``spec.replicas`` local processes of the pod template's containers,
maps each container port to a free loopback port, runs the readiness and liveness probes over HTTP,
restarts crashed processes with back-off, and writes back what a cluster would: Pod objects,
Deployment status, Endpoints and EndpointSlices of every Service (so clients and the router resolve
Services to the ready processes), and a Prometheus file-service-discovery target list with the pod
labels attached.

Containers of the mlrollouts images run the installed console scripts of this environment:
``mlrollouts/serving`` runs ``mlserving`` and ``mlrollouts/operator`` runs ``mlrollouts``. Other
images run their ``command`` from ``PATH``.

Volumes (``secret``, ``configMap``, ``emptyDir``, ``hostPath``) are directories under the pod's work
dir, ``persistentVolumeClaim`` volumes are ``claims/<namespace>/<claimName>`` under the kubelet's work
dir (shared by the pods naming the claim), and the paths a container is given under its mounts are
rewritten to them (see ``mlrollouts.local.volumes``); a pod whose Secret or ConfigMap does not exist
yet waits for it. Init containers run one after the other before the containers start, each until
it exits 0.
Deployments roll out with surge, or ``Recreate`` (every old pod gone before a new one starts).
A Job runs one pod to completion: with ``restartPolicy: OnFailure`` a failed container restarts in
its pod, with ``Never`` a new pod replaces a failed one; the Job fails once its failures exceed
``backoffLimit`` or it has run longer than ``activeDeadlineSeconds``, and is deleted
``ttlSecondsAfterFinished`` after it ended. Its status (``active``, ``succeeded``, ``failed``, the
``Complete``/``Failed`` conditions) is written back as the Job controller writes it.
Startup, readiness and liveness probes run over HTTP. With a service proxy (``service_proxy_port``),
processes reach ``http://<service>.<namespace>.svc`` names through it (see
``mlrollouts.local.service_proxy``). With ``runtime=PodmanRuntime(...)`` (``--runtime podman``) the
containers run from their images instead (see ``mlrollouts.local.containers``).

It is level-triggered: every ``poll_interval`` it lists the objects and converges, so a kubelet
restarted at any moment picks up where it was (processes it started are children of its own process
group and end with it).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mlrollouts.controller.kube import KubeError, Obj, SyncKube
from mlrollouts.local.containers import PodmanRuntime
from mlrollouts.local.lifeline import die_with_parent
from mlrollouts.local.service_proxy import EndpointTable, ServiceProxy
from mlrollouts.local.volumes import (
    MissingReference,
    PodVolumes,
    container_mounts,
    materialize,
    pod_volumes,
    rewrite_path,
)

log = logging.getLogger("mlrollouts.kubelet")

LOCAL_PORTS_ANNOTATION = "mlrollouts.io/local-ports"
MANAGED_BY = "mlrollouts-local-kubelet"
ENDPOINT_SLICE_API = "discovery.k8s.io/v1"
# Console scripts that the mlrollouts images run by default (no ``command`` in the container).
IMAGE_ENTRYPOINTS = {
    "mlrollouts/serving": ["mlserving"],
    "mlrollouts/operator": ["mlrollouts"],
}
# Console scripts run through this interpreter, so the playground needs nothing on PATH.
SCRIPT_MODULES = {
    "mlserving": "mlserving.cli",
    "mlrollouts": "mlrollouts.cli.main",
    "kubectl-mlrollouts": "mlrollouts.cli.main",
}
MAX_BACKOFF = 30.0
LOCAL_MAX_GRACE = 10.0  # termination grace is capped: a playground should stop quickly


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def allocate_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def template_hash(template: Obj) -> str:
    return hashlib.sha256(json.dumps(template, sort_keys=True).encode()).hexdigest()[:10]


def image_repository(image: str) -> str:
    """``docker.io/mlrollouts/serving:0.1@sha256:..`` -> ``mlrollouts/serving``."""
    name = image.split("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    if ":" in last:
        name = name[: len(name) - len(last)] + last.split(":", 1)[0]
    parts = name.split("/")
    if len(parts) > 2 or (len(parts) == 2 and ("." in parts[0] or ":" in parts[0])):
        parts = parts[1:] if ("." in parts[0] or ":" in parts[0] or parts[0] == "localhost") else parts
    return "/".join(parts[-2:])


def selector_matches(selector: dict[str, str] | None, labels: dict[str, str]) -> bool:
    if not selector:
        return False
    return all(labels.get(k) == v for k, v in selector.items())


def label_selector_matches(selector: Obj | None, labels: dict[str, str]) -> bool:
    """A Deployment's ``spec.selector`` (matchLabels and matchExpressions)."""
    if not selector:
        return False
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values") or []
        present = key in labels
        if (op == "In" and labels.get(key) not in values) or (
            op == "NotIn" and present and labels[key] in values
        ):
            return False
        if (op == "Exists" and not present) or (op == "DoesNotExist" and present):
            return False
    return True


def prometheus_label_name(key: str) -> str:
    return re.sub(r"[^a-zA-Z0-9_]", "_", key)


@dataclass
class Probe:
    path: str
    port: int  # the local port
    period: float
    failure_threshold: int
    initial_delay: float
    timeout: float


@dataclass
class ContainerProcess:
    name: str
    argv: list[str]
    env: dict[str, str]
    ports: dict[int, int]  # containerPort -> local port
    readiness: Probe | None
    liveness: Probe | None
    log_path: Path
    spec: Obj = field(default_factory=dict)  # the container of the pod template
    mounts: dict[str, Path] = field(default_factory=dict)  # mountPath -> local directory
    startup: Probe | None = None
    started: bool = True  # the startup probe passed (or there is none)
    startup_failures: int = 0
    next_startup: float = 0.0
    popen: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    restarts: int = 0
    ready: bool = False
    next_start: float = 0.0
    last_exit: int | None = None
    liveness_failures: int = 0
    readiness_failures: int = 0
    next_probe: float = 0.0
    next_readiness: float = 0.0
    next_liveness: float = 0.0
    last_error: str = ""
    last_message: str = ""  # termination message of the last exit (FallbackToLogsOnError: the log tail)
    # exited for good: a Job pod's container that succeeded (or failed, restartPolicy Never)
    done: bool = False

    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None


@dataclass
class PodProcess:
    namespace: str
    name: str
    deployment: str
    deployment_uid: str
    hash: str
    labels: dict[str, str]
    annotations: dict[str, str]
    containers: list[ContainerProcess]
    workdir: Path
    grace: float
    created: str = field(default_factory=now_iso)
    terminating_since: float | None = None
    published: str = ""  # last Pod status we wrote, to skip no-op patches
    failure: str = ""  # why the pod cannot run at all (bad command, unsupported volume)
    named_ports: dict[str, int] = field(default_factory=dict)  # port name -> containerPort
    volumes: PodVolumes | None = None
    prepared: bool = False  # volumes written and environments resolved
    waiting: str = ""  # what the pod waits for before its containers start (a missing Secret)
    spec: Obj = field(default_factory=dict)  # the pod template's spec
    init_containers: list[ContainerProcess] = field(default_factory=list)  # run in order, each to success
    owner_kind: str = "Deployment"  # or "Job" (``deployment`` then names the Job)
    restart_policy: str = "Always"
    counted: bool = False  # a failed Job pod already counted among the Job's failures

    @property
    def ready(self) -> bool:
        return not self.failure and self.terminating_since is None and all(c.ready for c in self.containers)

    @property
    def finished(self) -> str:
        """``Succeeded`` or ``Failed`` once every container of a run-to-completion pod has exited for
        good (or the pod cannot run at all); "" while it runs or for a Deployment's pod."""
        if self.restart_policy == "Always":
            return ""
        if self.failure:
            return "Failed"
        if not self.containers or not all(c.done for c in self.containers):
            return ""
        return "Succeeded" if all(c.last_exit == 0 for c in self.containers) else "Failed"

    def port_map(self) -> dict[int, int]:
        ports: dict[int, int] = {}
        for container in self.containers:
            ports.update(container.ports)
        return ports


@dataclass
class JobRun:
    """What the kubelet knows of one Job it runs (its status is written from this)."""

    uid: str
    start_time: str = field(default_factory=lambda: now_iso())
    started: float = field(default_factory=time.monotonic)
    failed_pods: int = 0
    ended: str = ""  # "Complete" or "Failed"
    reason: str = ""
    message: str = ""
    completion_time: str = ""
    ended_at: float = 0.0
    published: str = ""


def termination_message(container: ContainerProcess, code: int) -> str:
    """What a kubelet keeps of an exit: with ``FallbackToLogsOnError``, a failed container's last
    log lines (80 lines, 4096 bytes at most); a process has no termination message file here."""
    if code == 0 or container.spec.get("terminationMessagePolicy") != "FallbackToLogsOnError":
        return ""
    try:
        with open(container.log_path, "rb") as log_file:
            log_file.seek(0, os.SEEK_END)
            log_file.seek(max(0, log_file.tell() - 4096))
            tail = log_file.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(tail.splitlines()[-80:])


def last_state(container: ContainerProcess) -> Obj:
    if container.last_exit is None:
        return {}
    terminated: Obj = {
        "exitCode": container.last_exit,
        "reason": "Error" if container.last_exit else "Completed",
    }
    if container.last_message:
        terminated["message"] = container.last_message
    return {"lastState": {"terminated": terminated}}


def probe_of(spec: Obj | None, ports: dict[int, int], named: dict[str, int], fast: bool) -> Probe | None:
    """An HTTP probe of a container, aimed at the local port of its container port."""
    if not spec or "httpGet" not in spec:
        return None
    http = spec["httpGet"]
    port = http.get("port")
    container_port = named[port] if isinstance(port, str) and port in named else int(port)
    local = ports.get(container_port)
    if local is None:  # probing a port the container does not declare: it listens there as is
        local = container_port
    period = float(spec.get("periodSeconds", 10))
    return Probe(
        path=http.get("path", "/"),
        port=local,
        # readiness and startup are probed faster than in a cluster so the playground reacts
        # quickly; liveness keeps its period, or slow starters would be killed sooner than on a cluster
        period=max(0.5, min(period, 2.0)) if fast else max(1.0, period),
        failure_threshold=int(spec.get("failureThreshold", 3)),
        initial_delay=float(spec.get("initialDelaySeconds", 0)),
        timeout=float(spec.get("timeoutSeconds", 1)),
    )


# probes go straight to the process, whatever proxy the environment names
PROBE_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def probe_passes(probe: Probe) -> bool:
    try:
        url = f"http://127.0.0.1:{probe.port}{probe.path}"
        with PROBE_OPENER.open(url, timeout=probe.timeout) as resp:
            return 200 <= resp.status < 400
    except (urllib.error.URLError, OSError, ValueError):
        return False


def job_run(job: Obj) -> JobRun:
    """The run of a Job first seen now; one that ended before (a restarted kubelet) stays ended."""
    status = job.get("status") or {}
    run = JobRun(uid=job["metadata"].get("uid", ""), start_time=status.get("startTime") or now_iso())
    run.failed_pods = int(status.get("failed") or 0)
    for condition in status.get("conditions") or []:
        if condition.get("type") in ("Complete", "Failed") and condition.get("status") == "True":
            run.ended, run.reason = condition["type"], condition.get("reason") or ""
            run.message = condition.get("message") or ""
            run.completion_time = (
                status.get("completionTime") or condition.get("lastTransitionTime") or now_iso()
            )
            run.ended_at = time.monotonic()
    return run


def job_status(run: JobRun, pods: list[PodProcess]) -> Obj:
    """A Job's status as the Job controller writes it (with the conditions Kubernetes 1.31+ adds)."""
    status: Obj = {
        "startTime": run.start_time,
        "active": sum(1 for p in pods if not p.finished) if not run.ended else 0,
        "succeeded": sum(1 for p in pods if p.finished == "Succeeded"),
        "failed": run.failed_pods + sum(c.restarts for p in pods for c in p.containers),
        "ready": sum(1 for p in pods if p.ready and not p.finished),
    }
    if run.ended:
        interim = "SuccessCriteriaMet" if run.ended == "Complete" else "FailureTarget"
        status["conditions"] = [
            {
                "type": kind,
                "status": "True",
                "reason": run.reason,
                "message": run.message,
                "lastProbeTime": run.completion_time,
                "lastTransitionTime": run.completion_time,
            }
            for kind in (interim, run.ended)
        ]
        if run.ended == "Complete":
            status["completionTime"] = run.completion_time
    return status


class ProcessKubelet:
    """Runs Deployments of one API server as local processes (see the module docstring)."""

    def __init__(
        self,
        kube: SyncKube,
        workdir: Path,
        *,
        kubeconfig: str | None = None,
        prometheus_sd_file: Path | None = None,
        namespace: str | None = None,
        poll_interval: float = 0.3,
        extra_env: dict[str, str] | None = None,
        service_proxy_port: int | None = None,
        runtime: PodmanRuntime | None = None,
    ) -> None:
        """``service_proxy_port``: serve Service names to the pods through a proxy on this port
        (0: any free port); None: no proxy. ``runtime``: run containers from their images with it;
        None: as processes of this environment."""
        self.kube = kube
        self.workdir = workdir
        self.kubeconfig = kubeconfig
        self.sd_file = prometheus_sd_file
        self.namespace = namespace
        self.poll_interval = poll_interval
        self.extra_env = extra_env or {}
        self.pods: dict[tuple[str, str], PodProcess] = {}
        self.jobs: dict[tuple[str, str], JobRun] = {}
        self._published_deployments: dict[tuple[str, str], str] = {}
        self._published_endpoints: dict[tuple[str, str], str] = {}
        self._published_sd = ""
        self._stop = threading.Event()
        self._counter = 0
        self.service_proxy = ServiceProxy(service_proxy_port) if service_proxy_port is not None else None
        self.runtime = runtime

    # ------------------------------------------------------------------ loop
    def run(self) -> None:
        log.info("process kubelet started", extra={"server": self.kube.server})
        if self.service_proxy is not None:
            self.service_proxy.start()
            log.info("service proxy on %s", self.service_proxy.url)
        if self.runtime is not None:
            self.runtime.clean_up()
        while not self._stop.is_set():
            try:
                self.sync_once()
            except (KubeError, OSError, ValueError) as exc:  # the API may be restarting: try again
                log.warning("sync failed: %s", exc)
            self._stop.wait(self.poll_interval)
        self.shutdown()

    def stop(self) -> None:
        self._stop.set()

    def sync_once(self) -> None:
        deployments = self.kube.list("apps/v1", "Deployment", self.namespace)
        jobs = self.kube.list("batch/v1", "Job", self.namespace)
        self._reconcile_deployments(deployments)
        self._reconcile_jobs(jobs)
        self._supervise()
        self._publish_pods()
        self._publish_deployments(deployments)
        self._publish_jobs(jobs)
        self._publish_endpoints()
        self._publish_prometheus_targets()

    def shutdown(self) -> None:
        """Stop every process (SIGTERM, then SIGKILL after the grace period), then the proxy."""
        try:
            self._stop_processes()
        finally:
            if self.runtime is not None:
                self.runtime.clean_up()
            if self.service_proxy is not None:
                self.service_proxy.stop()

    def _stop_processes(self) -> None:
        for pod in self.pods.values():
            if pod.terminating_since is None:
                pod.terminating_since = time.monotonic()
            for container in [*pod.init_containers, *pod.containers]:
                self._signal(pod, container, signal.SIGTERM)
        deadline = time.monotonic() + min(
            LOCAL_MAX_GRACE, max((p.grace for p in self.pods.values()), default=0)
        )
        for pod in self.pods.values():
            for container in [*pod.init_containers, *pod.containers]:
                if container.popen is None:
                    continue
                try:
                    container.popen.wait(timeout=max(0.0, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    self._signal(pod, container, signal.SIGKILL)
                    container.popen.wait(timeout=5)

    # ------------------------------------------------------------ deployments
    def _reconcile_deployments(self, deployments: list[Obj]) -> None:
        wanted_keys: set[tuple[str, str]] = set()
        for deployment in deployments:
            meta = deployment["metadata"]
            if meta.get("deletionTimestamp"):
                continue
            wanted_keys.add((meta.get("namespace", "default"), meta["name"]))
            self._reconcile_deployment(deployment)
        for pod in list(self.pods.values()):
            if (
                pod.owner_kind == "Deployment"
                and (pod.namespace, pod.deployment) not in wanted_keys
                and pod.terminating_since is None
            ):
                self._terminate(pod)

    def _reconcile_deployment(self, deployment: Obj) -> None:
        meta = deployment["metadata"]
        namespace, name = meta.get("namespace", "default"), meta["name"]
        spec = deployment.get("spec") or {}
        replicas = int(spec.get("replicas", 1))
        template = spec.get("template") or {}
        current_hash = template_hash(template)
        every = self._pods_of("Deployment", namespace, name)
        mine = [p for p in every if p.terminating_since is None]
        current = [p for p in mine if p.hash == current_hash]
        old = [p for p in mine if p.hash != current_hash]
        if (spec.get("strategy") or {}).get("type") == "Recreate":
            # never two generations at once: the old pods are gone before a new one starts
            for pod in old:
                self._terminate(pod)
            if any(p.hash != current_hash for p in every):
                return
        for _ in range(replicas - len(current)):
            pod = self._new_pod(deployment, template, current_hash)
            self.pods[(pod.namespace, pod.name)] = pod
            current.append(pod)
        if len(current) > replicas:
            # scale down the newest first, the way a ReplicaSet prefers not-ready and young pods
            surplus = sorted(current, key=lambda p: (p.ready, p.created))[: len(current) - replicas]
            for pod in surplus:
                self._terminate(pod)
        # surge roll-out: old pods go once the new template is fully ready
        ready_current = sum(1 for p in current if p.ready)
        if old and (ready_current >= replicas or replicas == 0):
            for pod in old:
                self._terminate(pod)

    # ------------------------------------------------------------------ jobs
    def _reconcile_jobs(self, jobs: list[Obj]) -> None:
        wanted: set[tuple[str, str]] = set()
        now = time.monotonic()
        for job in jobs:
            meta = job["metadata"]
            if meta.get("deletionTimestamp"):
                continue
            key = (meta.get("namespace", "default"), meta["name"])
            wanted.add(key)
            run = self.jobs.get(key)
            if run is None or run.uid != meta.get("uid", ""):
                run = self.jobs[key] = job_run(job)
            self._reconcile_job(job, run, now)
        for key in [k for k in self.jobs if k not in wanted]:
            del self.jobs[key]
            for pod in self._pods_of("Job", *key):
                self._terminate(pod)

    def _reconcile_job(self, job: Obj, run: JobRun, now: float) -> None:
        meta, spec = job["metadata"], job.get("spec") or {}
        namespace, name = meta.get("namespace", "default"), meta["name"]
        pods = [p for p in self._pods_of("Job", namespace, name) if p.terminating_since is None]
        for pod in pods:
            if pod.finished == "Failed" and not pod.counted:
                pod.counted = True
                run.failed_pods += 1
        if not run.ended:
            failures = run.failed_pods + sum(c.restarts for p in pods for c in p.containers)
            deadline = spec.get("activeDeadlineSeconds")
            if any(p.finished == "Succeeded" for p in pods):
                self._end_job(
                    run, now, "Complete", "CompletionsReached", "Reached expected number of succeeded pods"
                )
            elif failures > int(spec.get("backoffLimit", 6)):
                self._end_job(
                    run, now, "Failed", "BackoffLimitExceeded", "Job has reached the specified backoff limit"
                )
            elif deadline is not None and now - run.started > float(deadline):
                self._end_job(
                    run, now, "Failed", "DeadlineExceeded", "Job was active longer than specified deadline"
                )
            elif not any(not p.finished for p in pods):
                pod = self._new_pod(job, spec.get("template") or {}, "", kind="Job")
                self.pods[(pod.namespace, pod.name)] = pod
            if run.ended:
                log.info("job %s/%s %s: %s", namespace, name, run.ended, run.message)
        if run.ended:
            for pod in pods:
                if not pod.finished:
                    # a Job that ended stops what still runs; its restarts stay among the failures
                    run.failed_pods += sum(c.restarts for c in pod.containers)
                    self._terminate(pod)
            ttl = spec.get("ttlSecondsAfterFinished")
            if ttl is not None and now - run.ended_at >= float(ttl):
                with contextlib.suppress(KubeError):
                    self.kube.delete("batch/v1", "Job", namespace, name)

    @staticmethod
    def _end_job(run: JobRun, now: float, ended: str, reason: str, message: str) -> None:
        run.ended, run.reason, run.message = ended, reason, message
        run.completion_time, run.ended_at = now_iso(), now

    def _publish_jobs(self, jobs: list[Obj]) -> None:
        for job in jobs:
            meta = job["metadata"]
            key = (meta.get("namespace", "default"), meta["name"])
            run = self.jobs.get(key)
            if run is None or meta.get("deletionTimestamp"):
                continue
            pods = [p for p in self._pods_of("Job", *key) if p.terminating_since is None]
            status = job_status(run, pods)
            fingerprint = json.dumps(status, sort_keys=True)
            if run.published == fingerprint:
                continue
            try:
                self.kube.merge_patch(
                    "batch/v1", "Job", key[0], key[1], {"status": status}, subresource="status"
                )
                run.published = fingerprint
            except KubeError as exc:
                log.warning("could not publish job %s/%s: %s", key[0], key[1], exc)

    def _pods_of(self, kind: str, namespace: str, name: str) -> list[PodProcess]:
        return [
            p
            for p in self.pods.values()
            if (p.owner_kind, p.namespace, p.deployment) == (kind, namespace, name)
        ]

    def _new_pod(
        self, deployment: Obj, template: Obj, tmpl_hash: str, kind: str = "Deployment"
    ) -> PodProcess:
        """A pod of ``deployment`` (or of a Job, ``kind="Job"``) from its pod template."""
        meta = deployment["metadata"]
        namespace, name = meta.get("namespace", "default"), meta["name"]
        self._counter += 1
        suffix = hashlib.sha1(f"{name}{time.time_ns()}{self._counter}".encode()).hexdigest()[:5]
        tmeta = template.get("metadata") or {}
        labels = dict(tmeta.get("labels") or {})
        if kind == "Job":
            pod_name = f"{name}-{suffix}"
            labels.update({"job-name": name, "batch.kubernetes.io/job-name": name})
            labels["batch.kubernetes.io/controller-uid"] = meta.get("uid", "")
        else:
            pod_name = f"{name}-{tmpl_hash[:8]}-{suffix}"
            labels["pod-template-hash"] = tmpl_hash[:10]
        pod_spec = template.get("spec") or {}
        workdir = self.workdir / "pods" / namespace / pod_name
        workdir.mkdir(parents=True, exist_ok=True)
        grace = float(pod_spec.get("terminationGracePeriodSeconds", 30))
        pod = PodProcess(
            namespace=namespace,
            name=pod_name,
            deployment=name,
            deployment_uid=meta.get("uid", ""),
            hash=tmpl_hash,
            labels=labels,
            annotations=dict(tmeta.get("annotations") or {}),
            containers=[],
            workdir=workdir,
            grace=min(grace, LOCAL_MAX_GRACE),
            spec=pod_spec,
            owner_kind=kind,
            restart_policy=str(pod_spec.get("restartPolicy") or ("Never" if kind == "Job" else "Always")),
        )
        try:
            pod.volumes = pod_volumes(pod_spec, workdir / "volumes", self.workdir / "claims" / namespace)
            for container in pod_spec.get("initContainers") or []:
                pod.init_containers.append(self._container_process(pod, container))
            for container in pod_spec.get("containers") or []:
                pod.containers.append(self._container_process(pod, container))
        except (LookupError, ValueError) as exc:
            pod.failure = str(exc)
            log.error("pod %s/%s cannot start: %s", namespace, pod_name, exc)
        log.info("pod %s/%s scheduled", namespace, pod_name)
        return pod

    def _container_process(self, pod: PodProcess, container: Obj) -> ContainerProcess:
        ports: dict[int, int] = {}
        named: dict[str, int] = {}
        for port in container.get("ports") or []:
            local = allocate_port()
            ports[int(port["containerPort"])] = local
            if port.get("name"):
                named[port["name"]] = int(port["containerPort"])
        pod.named_ports.update(named)
        mounts = container_mounts(pod.volumes, container) if pod.volumes is not None else {}
        if self.runtime is not None:
            self.runtime.validate(pod.spec, container)
            argv: list[str] = []  # the runtime's command, made when the container starts
        else:
            argv = self._argv(container, ports, mounts)
        return ContainerProcess(
            name=container["name"],
            argv=argv,
            env={},  # resolved when the pod starts: the Secrets it reads may not exist yet
            ports=ports,
            readiness=probe_of(container.get("readinessProbe"), ports, named, fast=True),
            liveness=probe_of(container.get("livenessProbe"), ports, named, fast=False),
            startup=probe_of(container.get("startupProbe"), ports, named, fast=True),
            log_path=pod.workdir / f"{container['name']}.log",
            spec=container,
            mounts=mounts,
        )

    def _prepare(self, pod: PodProcess) -> bool:
        """Write the pod's volumes and resolve its environments; False while it must wait."""
        try:
            if pod.volumes is not None:
                materialize(pod.volumes, lambda kind, name: self.kube.get("v1", kind, pod.namespace, name))
            for container in [*pod.init_containers, *pod.containers]:
                container.env = self._env(pod, container.spec, container.ports, container.mounts)
            if self.runtime is not None:
                self.runtime.prepare(
                    pod, pod.spec, lambda kind, name: self.kube.get("v1", kind, pod.namespace, name)
                )
        except MissingReference as exc:
            if pod.waiting != str(exc):
                log.warning("pod %s/%s waits: %s", pod.namespace, pod.name, exc)
            pod.waiting = str(exc)
            return False
        except (LookupError, ValueError, OSError) as exc:
            pod.failure = str(exc)
            log.error("pod %s/%s cannot start: %s", pod.namespace, pod.name, exc)
            return False
        pod.waiting = ""
        pod.prepared = True
        return True

    def _argv(self, container: Obj, ports: dict[int, int], mounts: dict[str, Path]) -> list[str]:
        """The container's command and args as the process runs them: paths under its mounts point
        at the volumes, console scripts run through this interpreter, ports are the local ones."""
        command = [rewrite_path(str(c), mounts) for c in container.get("command") or []]
        args = [rewrite_path(str(a), mounts) for a in container.get("args") or []]
        if not command:
            entry = IMAGE_ENTRYPOINTS.get(image_repository(container.get("image", "")))
            if entry is None:
                raise ValueError(
                    f"container {container['name']!r}: image {container.get('image')!r} has no command and no "
                    "known entry point; set spec.containers[].command"
                )
            command = list(entry)
        argv = command + args
        script = os.path.basename(argv[0])
        module = SCRIPT_MODULES.get(script)
        if module:
            argv = [sys.executable, "-m", module, *argv[1:]]
            if script == "mlserving" and not any(a == "--host" or a.startswith("--host=") for a in argv):
                argv.append("--host=127.0.0.1")  # the servers' default 0.0.0.0 would expose the playground
        elif not os.path.isabs(argv[0]):
            from shutil import which

            found = which(argv[0])
            if not found:
                raise LookupError(f"container {container['name']!r}: command {argv[0]!r} not found on PATH")
            argv[0] = found
        return self._rewrite_ports(argv, ports)

    @staticmethod
    def _rewrite_ports(argv: list[str], ports: dict[int, int]) -> list[str]:
        """Point ``--port N`` / ``--port=N`` (and ``--*-port``) at the local port mapped for N."""
        out: list[str] = []
        i = 0
        while i < len(argv):
            token = argv[i]
            if re.fullmatch(r"--([\w-]+-)?port", token) and i + 1 < len(argv) and argv[i + 1].isdigit():
                out += [token, str(ports.get(int(argv[i + 1]), int(argv[i + 1])))]
                i += 2
                continue
            match = re.fullmatch(r"(--(?:[\w-]+-)?port)=(\d+)", token)
            if match:
                out.append(f"{match.group(1)}={ports.get(int(match.group(2)), int(match.group(2)))}")
            elif token in ("--host=0.0.0.0", "--host=::"):
                out.append("--host=127.0.0.1")
            elif token in ("0.0.0.0", "::") and out and out[-1] == "--host":
                out.append("127.0.0.1")
            else:
                out.append(token)
            i += 1
        return out

    def _env(
        self, pod: PodProcess, container: Obj, ports: dict[int, int], mounts: dict[str, Path]
    ) -> dict[str, str]:
        # a container of an image has the image's environment; a process needs this one's
        env = (
            {}
            if self.runtime is not None
            else {
                k: v
                for k, v in os.environ.items()
                if k in ("PATH", "HOME", "LANG", "LC_ALL", "PYTHONPATH", "VIRTUAL_ENV")
            }
        )
        env.update(self.extra_env)
        if self.service_proxy is not None:
            env.update(self.service_proxy.environment(env.get("NO_PROXY", "")))
        if self.runtime is None:
            # a container with a volume on /tmp writes its temporary files there, as in a cluster
            env["TMPDIR"] = str(mounts.get("/tmp", pod.workdir))
        else:
            mounts = {}  # a container sees its mounts at their paths: nothing to rewrite
        env["POD_NAME"] = pod.name
        env["POD_NAMESPACE"] = pod.namespace
        if self.kubeconfig:
            env["KUBECONFIG"] = self.kubeconfig
        for item in container.get("env") or []:
            name = item["name"]
            if "value" in item:
                value = str(item["value"])
            elif "valueFrom" in item:
                value = self._value_from(pod, item["valueFrom"], name)
            else:
                value = ""
            if name.endswith("PORT") and value.isdigit() and int(value) in ports:
                value = str(ports[int(value)])
            env[name] = rewrite_path(value, mounts)
        return env

    def _value_from(self, pod: PodProcess, source: Obj, name: str) -> str:
        if "fieldRef" in source:
            path = source["fieldRef"]["fieldPath"]
            fields = {
                "metadata.name": pod.name,
                "metadata.namespace": pod.namespace,
                "status.podIP": "127.0.0.1",
            }
            if path in fields:
                return fields[path]
            match = re.fullmatch(r"metadata\.labels\['(.+)'\]", path)
            if match:
                return pod.labels.get(match.group(1), "")
            raise ValueError(f"env {name}: fieldRef {path!r} is not supported by the local kubelet")
        for kind, ref_kind in (("secretKeyRef", "Secret"), ("configMapKeyRef", "ConfigMap")):
            if kind in source:
                key_ref = source[kind]
                obj = self.kube.get("v1", ref_kind, pod.namespace, key_ref["name"])
                data = (obj or {}).get("data") or {}
                if key_ref["key"] not in data:
                    if key_ref.get("optional"):
                        return ""
                    raise MissingReference(f"env {name}: {kind} {key_ref['name']}/{key_ref['key']} not found")
                value = data[key_ref["key"]]
                if kind == "secretKeyRef":
                    import base64

                    return base64.b64decode(value).decode()
                return str(value)
        raise ValueError(f"env {name}: unsupported valueFrom {sorted(source)}")

    # ------------------------------------------------------------- processes
    def _terminate(self, pod: PodProcess) -> None:
        if pod.terminating_since is not None:
            return
        log.info("pod %s/%s terminating", pod.namespace, pod.name)
        pod.terminating_since = time.monotonic()
        for container in [*pod.init_containers, *pod.containers]:
            container.ready = False
            self._signal(pod, container, signal.SIGTERM)

    def _signal(self, pod: PodProcess, container: ContainerProcess, sig: int) -> None:
        if self.runtime is not None:
            self.runtime.signal(pod, container, sig)
        elif container.running():
            assert container.popen is not None
            with contextlib.suppress(ProcessLookupError):
                container.popen.send_signal(sig)

    def _start(self, pod: PodProcess, container: ContainerProcess) -> None:
        if container.log_path.exists():  # `kubectl logs --previous` reads the last run's output
            container.log_path.replace(container.log_path.with_suffix(".previous.log"))
        with open(container.log_path, "wb") as logfile:
            if self.runtime is not None:
                container.popen = self.runtime.start(self, pod, pod.spec, container, logfile)
            else:
                container.popen = subprocess.Popen(
                    container.argv,
                    stdout=logfile,
                    stderr=subprocess.STDOUT,
                    env=container.env,
                    cwd=pod.workdir,
                    stdin=subprocess.DEVNULL,
                    preexec_fn=die_with_parent(),
                )
        container.started_at = time.monotonic()
        container.next_readiness = container.started_at + (
            container.readiness.initial_delay if container.readiness else 0
        )
        # the first liveness check comes one period after start, as on a kubelet
        container.next_liveness = container.started_at + (
            max(container.liveness.initial_delay, container.liveness.period) if container.liveness else 0
        )
        container.next_startup = container.started_at + (
            container.startup.initial_delay if container.startup else 0
        )
        container.started = container.startup is None
        container.startup_failures = 0
        container.next_probe = min(container.next_readiness, container.next_startup)
        container.ready = container.readiness is None and container.started
        container.liveness_failures = 0
        container.readiness_failures = 0

    def _supervise(self) -> None:
        now = time.monotonic()
        for key, pod in list(self.pods.items()):
            if pod.terminating_since is not None:
                done = True
                for container in [*pod.init_containers, *pod.containers]:
                    if container.running():
                        if now - pod.terminating_since > pod.grace:
                            self._signal(pod, container, signal.SIGKILL)
                        done = False
                if done:
                    self._delete_pod_object(pod)
                    del self.pods[key]
                continue
            if pod.failure or (not pod.prepared and not self._prepare(pod)):
                continue
            if not self._init_containers_done(pod, now):
                continue
            for container in pod.containers:
                if container.done:
                    continue
                if container.popen is None:
                    if now >= container.next_start:
                        self._start(pod, container)
                    continue
                code = container.popen.poll()
                if code is not None:
                    container.ready = False
                    container.last_exit = code
                    container.last_message = termination_message(container, code)
                    if pod.restart_policy != "Always" and (code == 0 or pod.restart_policy == "Never"):
                        container.done = True  # run to completion: it is not started again
                        container.popen = None
                        log.info(
                            "container %s of %s/%s ended with %s",
                            container.name,
                            pod.namespace,
                            pod.name,
                            code,
                        )
                        continue
                    container.restarts += 1
                    backoff = min(MAX_BACKOFF, 2.0 ** min(container.restarts - 1, 5))
                    container.next_start = now + backoff
                    container.popen = None
                    log.warning(
                        "container %s of %s/%s exited with %s; restart in %.0fs",
                        container.name,
                        pod.namespace,
                        pod.name,
                        code,
                        backoff,
                    )
                    continue
                if now >= container.next_probe:
                    self._probe(pod, container, now)

    def _init_containers_done(self, pod: PodProcess, now: float) -> bool:
        """Run the init containers one after the other, each until it exits 0 (a failed one restarts
        with back-off, as with ``restartPolicy: Always``); True once all have succeeded."""
        for container in pod.init_containers:
            if container.last_exit == 0 and container.popen is None:
                continue
            if container.popen is None:
                if now >= container.next_start:
                    self._start(pod, container)
                return False
            code = container.popen.poll()
            if code is None:
                return False
            container.popen = None
            container.last_exit = code
            if code == 0:
                continue
            container.last_message = termination_message(container, code)
            container.restarts += 1
            backoff = min(MAX_BACKOFF, 2.0 ** min(container.restarts - 1, 5))
            container.next_start = now + backoff
            log.warning(
                "init container %s of %s/%s exited with %s; restart in %.0fs",
                container.name,
                pod.namespace,
                pod.name,
                code,
                backoff,
            )
            return False
        return True

    def _probe(self, pod: PodProcess, container: ContainerProcess, now: float) -> None:
        if not container.started:
            self._probe_startup(pod, container, now)
        else:
            self._probe_readiness(container, now)
            self._probe_liveness(pod, container, now)
        # each probe runs on its own schedule; the next wake-up is the earliest one
        pending = (
            [container.next_startup]
            if not container.started
            else [
                t
                for t, p in (
                    (container.next_readiness, container.readiness),
                    (container.next_liveness, container.liveness),
                )
                if p
            ]
        )
        container.next_probe = min(pending) if pending else now + 1.0

    def _probe_startup(self, pod: PodProcess, container: ContainerProcess, now: float) -> None:
        """Readiness and liveness wait for the startup probe; too many failures restart the container."""
        startup = container.startup
        assert startup is not None
        if now < container.next_startup:
            return
        container.next_startup = now + startup.period
        if probe_passes(startup):
            container.started = True
            container.ready = container.readiness is None
            container.next_readiness = now
            if container.liveness is not None:
                container.next_liveness = now + container.liveness.period
            return
        container.startup_failures += 1
        if container.startup_failures >= startup.failure_threshold:
            self._restart_failed(pod, container, "startup")

    def _probe_readiness(self, container: ContainerProcess, now: float) -> None:
        readiness = container.readiness
        if readiness is None or now < container.next_readiness:
            return
        container.next_readiness = now + readiness.period
        ok = probe_passes(readiness)
        container.readiness_failures = 0 if ok else container.readiness_failures + 1
        if ok:
            container.ready = True
        elif container.readiness_failures >= readiness.failure_threshold:
            container.ready = False

    def _probe_liveness(self, pod: PodProcess, container: ContainerProcess, now: float) -> None:
        liveness = container.liveness
        if (
            liveness is None
            or now < container.next_liveness
            or now - container.started_at < liveness.initial_delay
        ):
            return
        container.next_liveness = now + liveness.period
        if probe_passes(liveness):
            container.liveness_failures = 0
            return
        container.liveness_failures += 1
        if container.liveness_failures >= liveness.failure_threshold:
            self._restart_failed(pod, container, "liveness")

    def _restart_failed(self, pod: PodProcess, container: ContainerProcess, probe: str) -> None:
        log.warning(
            "container %s of %s/%s failed its %s probe; restarting",
            container.name,
            pod.namespace,
            pod.name,
            probe,
        )
        self._signal(pod, container, signal.SIGKILL)

    # --------------------------------------------------------------- publish
    def _pod_object(self, pod: PodProcess) -> Obj:
        ready = pod.ready
        statuses = []
        for c in pod.containers:
            state: Obj
            if c.running():
                state = {"running": {"startedAt": now_iso()}}
            elif c.done:
                ended: Obj = {"exitCode": c.last_exit, "reason": "Completed" if c.last_exit == 0 else "Error"}
                if c.last_message:
                    ended["message"] = c.last_message
                state = {"terminated": ended}
            elif c.last_exit is not None:
                state = {"waiting": {"reason": "CrashLoopBackOff", "message": f"exit code {c.last_exit}"}}
            else:
                state = {"waiting": {"reason": "ContainerCreating"}}
                if pod.waiting:
                    state["waiting"]["message"] = pod.waiting
            statuses.append(
                {
                    "name": c.name,
                    "ready": c.ready,
                    "restartCount": c.restarts,
                    "image": "",
                    "imageID": "",
                    "started": c.running(),
                    "state": state,
                    **(last_state(c) if not c.done or c.restarts else {}),
                }
            )
        phase = pod.finished or (
            "Failed"
            if pod.failure
            else ("Running" if any(c.running() for c in pod.containers) else "Pending")
        )
        annotations = dict(pod.annotations)
        annotations[LOCAL_PORTS_ANNOTATION] = json.dumps({str(k): v for k, v in pod.port_map().items()})
        conditions = [
            {"type": "PodScheduled", "status": "True"},
            {"type": "Ready", "status": "True" if ready else "False"},
            {"type": "ContainersReady", "status": "True" if ready else "False"},
        ]
        if pod.failure or pod.waiting:
            conditions[1]["message"] = pod.failure or pod.waiting
        return {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": pod.name,
                "namespace": pod.namespace,
                "labels": pod.labels,
                "annotations": annotations,
                "ownerReferences": [
                    {
                        "apiVersion": "batch/v1" if pod.owner_kind == "Job" else "apps/v1",
                        "kind": pod.owner_kind,
                        "name": pod.deployment,
                        "uid": pod.deployment_uid,
                        "controller": True,
                        "blockOwnerDeletion": True,
                    }
                ]
                if pod.deployment_uid
                else [],
            },
            "spec": {
                "nodeName": "local",
                "containers": [{"name": c.name, "image": "local"} for c in pod.containers],
            },
            "status": {
                "phase": phase,
                "podIP": "127.0.0.1",
                "hostIP": "127.0.0.1",
                "conditions": conditions,
                "containerStatuses": statuses,
                "message": pod.failure or None,
            },
        }

    def _publish_pods(self) -> None:
        for pod in self.pods.values():
            if pod.terminating_since is not None:
                continue
            body = self._pod_object(pod)
            fingerprint = json.dumps(
                {k: body[k] for k in ("status",)} | {"ann": body["metadata"]["annotations"]},
                sort_keys=True,
                default=str,
            )
            fingerprint = re.sub(r'"startedAt": "[^"]+"', "", fingerprint)
            if fingerprint == pod.published:
                continue
            try:
                if not pod.published:
                    status = body.pop("status")
                    try:
                        self.kube.create(body)
                    except KubeError as exc:
                        if exc.status != 409:
                            raise
                        self.kube.merge_patch(
                            "v1", "Pod", pod.namespace, pod.name, {"metadata": body["metadata"]}
                        )
                    body["status"] = status
                else:
                    self.kube.merge_patch(
                        "v1",
                        "Pod",
                        pod.namespace,
                        pod.name,
                        {"metadata": {"annotations": body["metadata"]["annotations"]}},
                    )
                self.kube.merge_patch(
                    "v1", "Pod", pod.namespace, pod.name, {"status": body["status"]}, subresource="status"
                )
                pod.published = fingerprint
            except KubeError as exc:
                log.warning("could not publish pod %s/%s: %s", pod.namespace, pod.name, exc)

    def _delete_pod_object(self, pod: PodProcess) -> None:
        with contextlib.suppress(KubeError):
            self.kube.delete("v1", "Pod", pod.namespace, pod.name)

    def _publish_deployments(self, deployments: list[Obj]) -> None:
        for deployment in deployments:
            meta = deployment["metadata"]
            namespace, name = meta.get("namespace", "default"), meta["name"]
            if meta.get("deletionTimestamp"):
                continue
            spec = deployment.get("spec") or {}
            replicas = int(spec.get("replicas", 1))
            current_hash = template_hash(spec.get("template") or {})
            pods = self._pods_of("Deployment", namespace, name)
            live = [p for p in pods if p.terminating_since is None]
            updated = [p for p in live if p.hash == current_hash]
            ready = [p for p in live if p.ready]
            available = len(ready)
            complete = len(updated) == replicas and all(p.ready for p in updated) and len(live) == replicas
            status = {
                "observedGeneration": meta.get("generation", 1),
                "replicas": len(live),
                "updatedReplicas": len(updated),
                "readyReplicas": len(ready),
                "availableReplicas": available,
                "unavailableReplicas": max(0, replicas - available),
                "conditions": [
                    {
                        "type": "Available",
                        "status": "True" if available >= replicas else "False",
                        "reason": "MinimumReplicasAvailable"
                        if available >= replicas
                        else "MinimumReplicasUnavailable",
                    },
                    {
                        "type": "Progressing",
                        "status": "True",
                        "reason": "NewReplicaSetAvailable" if complete else "ReplicaSetUpdated",
                    },
                ],
            }
            fingerprint = json.dumps(status, sort_keys=True)
            key = (namespace, name)
            if self._published_deployments.get(key) == fingerprint:
                continue
            stamped = json.loads(fingerprint)
            for condition in stamped["conditions"]:
                condition["lastUpdateTime"] = condition["lastTransitionTime"] = now_iso()
            try:
                self.kube.merge_patch(
                    "apps/v1", "Deployment", namespace, name, {"status": stamped}, subresource="status"
                )
                self._published_deployments[key] = fingerprint
            except KubeError as exc:
                log.warning("could not publish deployment status %s/%s: %s", namespace, name, exc)

    def _publish_endpoints(self) -> None:
        services = self.kube.list("v1", "Service", self.namespace)
        table: EndpointTable = {}
        for service in services:
            meta = service["metadata"]
            namespace, name = meta.get("namespace", "default"), meta["name"]
            spec = service.get("spec") or {}
            selector = spec.get("selector")
            if not selector:
                continue  # Services without a selector keep hand-written Endpoints
            ready_ports: dict[int, list[int]] = {int(p["port"]): [] for p in spec.get("ports") or []}
            table[(namespace, name)] = ready_ports
            subsets = []
            slice_endpoints = []
            slice_ports: list[Obj] = []
            for pod in sorted(self.pods.values(), key=lambda p: p.name):
                if pod.namespace != namespace or pod.terminating_since is not None or pod.failure:
                    continue
                if not selector_matches(selector, pod.labels):
                    continue
                ports = []
                for svc_port in spec.get("ports") or []:
                    target = svc_port.get("targetPort", svc_port["port"])
                    container_port = self._resolve_target(pod, target)
                    local = pod.port_map().get(container_port) if container_port else None
                    if local is None:
                        continue
                    port = {"port": local, "protocol": svc_port.get("protocol", "TCP")}
                    if svc_port.get("name"):
                        port["name"] = svc_port["name"]
                    ports.append(port)
                    if pod.ready:
                        ready_ports[int(svc_port["port"])].append(local)
                if not ports:
                    continue
                address = {
                    "ip": "127.0.0.1",
                    "targetRef": {"kind": "Pod", "name": pod.name, "namespace": namespace},
                }
                key = "addresses" if pod.ready else "notReadyAddresses"
                subsets.append({key: [address], "ports": ports})
                slice_endpoints.append((pod, ports))
                slice_ports = ports
            endpoints = {
                "apiVersion": "v1",
                "kind": "Endpoints",
                "metadata": {
                    "name": name,
                    "namespace": namespace,
                    "labels": {"app.kubernetes.io/managed-by": MANAGED_BY},
                },
                "subsets": subsets,
            }
            fingerprint = json.dumps(subsets, sort_keys=True)
            if self._published_endpoints.get((namespace, name)) == fingerprint:
                continue
            try:
                existing = self.kube.get("v1", "Endpoints", namespace, name)
                if existing is None:
                    self.kube.create(endpoints)
                else:
                    endpoints["metadata"]["resourceVersion"] = existing["metadata"].get("resourceVersion")
                    self.kube.replace(endpoints)
                self._publish_endpoint_slices(namespace, name, slice_endpoints, slice_ports)
                self._published_endpoints[(namespace, name)] = fingerprint
            except KubeError as exc:
                log.warning("could not publish endpoints %s/%s: %s", namespace, name, exc)
        if self.service_proxy is not None:
            self.service_proxy.update(table)

    def _publish_endpoint_slices(
        self, namespace: str, service: str, endpoints: list[tuple[PodProcess, list[Obj]]], ports: list[Obj]
    ) -> None:
        """One EndpointSlice per endpoint: each local process listens on its own port."""
        wanted = {}
        for pod, pod_ports in endpoints:
            slice_name = f"{service}-{pod.name.rsplit('-', 1)[-1]}"[:63]
            wanted[slice_name] = {
                "apiVersion": ENDPOINT_SLICE_API,
                "kind": "EndpointSlice",
                "addressType": "IPv4",
                "metadata": {
                    "name": slice_name,
                    "namespace": namespace,
                    "labels": {
                        "kubernetes.io/service-name": service,
                        "endpointslice.kubernetes.io/managed-by": MANAGED_BY,
                    },
                },
                "endpoints": [
                    {
                        "addresses": ["127.0.0.1"],
                        "conditions": {"ready": pod.ready},
                        "targetRef": {"kind": "Pod", "name": pod.name, "namespace": namespace},
                    }
                ],
                "ports": pod_ports,
            }
        del ports
        try:
            existing = self.kube.list(
                ENDPOINT_SLICE_API, "EndpointSlice", namespace, {"kubernetes.io/service-name": service}
            )
        except KubeError as exc:
            if exc.status == 404:
                return  # an API server without discovery.k8s.io: Endpoints alone will do
            raise
        for item in existing:
            if item["metadata"]["name"] not in wanted:
                self.kube.delete(ENDPOINT_SLICE_API, "EndpointSlice", namespace, item["metadata"]["name"])
        for body in wanted.values():
            self._create_or_patch(body)

    def _create_or_patch(self, body: Obj) -> None:
        try:
            self.kube.create(body)
        except KubeError as exc:
            if exc.status != 409:
                raise
            meta = body["metadata"]
            self.kube.merge_patch(body["apiVersion"], body["kind"], meta["namespace"], meta["name"], body)

    @staticmethod
    def _resolve_target(pod: PodProcess, target: Any) -> int | None:
        if isinstance(target, int) or (isinstance(target, str) and target.isdigit()):
            return int(target)
        return pod.named_ports.get(str(target))

    def _publish_prometheus_targets(self) -> None:
        if self.sd_file is None:
            return
        groups = []
        for pod in sorted(self.pods.values(), key=lambda p: p.name):
            if not pod.ready:
                continue
            ports = pod.port_map()
            if not ports:
                continue
            if pod.annotations.get("prometheus.io/scrape") == "false":
                continue
            wanted = pod.annotations.get("prometheus.io/port")
            container_port = int(wanted) if wanted and wanted.isdigit() else next(iter(ports))
            local = ports.get(container_port)
            if local is None:
                continue
            labels = {prometheus_label_name(k): v for k, v in pod.labels.items()}
            labels.update({"namespace": pod.namespace, "pod": pod.name})
            path = pod.annotations.get("prometheus.io/path")
            if path:
                labels["__metrics_path__"] = path
            groups.append({"targets": [f"127.0.0.1:{local}"], "labels": labels})
        payload = json.dumps(groups, indent=1, sort_keys=True)
        if payload == self._published_sd:
            return
        tmp = self.sd_file.with_suffix(".tmp")
        tmp.write_text(payload)
        tmp.replace(self.sd_file)
        self._published_sd = payload


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(
        prog="mlrollouts-kubelet", description="Run Deployments as local processes."
    )
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--workdir", required=True, type=Path)
    parser.add_argument("--prometheus-sd-file", type=Path)
    parser.add_argument("--namespace")
    parser.add_argument("--poll-interval", type=float, default=0.3)
    parser.add_argument(
        "--service-proxy-port",
        type=int,
        help="serve http://<service>.<namespace>.svc names to the pods through an HTTP proxy on this "
        "loopback port (0: any free port)",
    )
    parser.add_argument(
        "--runtime",
        choices=("process", "podman"),
        default="process",
        help="run containers as processes of this environment, or from their images with podman "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="environment variable added to every process (repeatable)",
    )
    args = parser.parse_args(argv)
    extra_env = dict(item.split("=", 1) for item in args.env)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    kube = SyncKube.from_environment(args.kubeconfig)
    kubeconfig = str(Path(args.kubeconfig).resolve())
    runtime = PodmanRuntime(args.workdir, kubeconfig=kubeconfig) if args.runtime == "podman" else None
    if runtime is not None:
        try:
            runtime.check()
        except RuntimeError as exc:
            print(f"mlrollouts-kubelet: {exc}", file=sys.stderr)
            return 1
    kubelet = ProcessKubelet(
        kube,
        args.workdir,
        kubeconfig=kubeconfig,
        prometheus_sd_file=args.prometheus_sd_file,
        namespace=args.namespace,
        poll_interval=args.poll_interval,
        extra_env=extra_env,
        service_proxy_port=args.service_proxy_port,
        runtime=runtime,
    )
    signal.signal(signal.SIGTERM, lambda *_: kubelet.stop())
    signal.signal(signal.SIGINT, lambda *_: kubelet.stop())
    kubelet.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
