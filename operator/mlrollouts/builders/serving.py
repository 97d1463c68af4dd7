"""Per-revision serving objects: Deployment ``<name>-<rev>`` and Service ``<name>-<rev>``.

With online learning the serving pods also log every request to the learner, forward labelled
feedback to it, and hot-load its signed snapshots (verified with the key of ``<name>-snapshot-key``).

With a compile cache (``spec.model.compileCache``) a revision compiles once, before any of its pods
starts: a Job ``<name>-<rev>-compile`` (``mlserving compile``, the server's own image, arguments and
volumes, so the same cache key) compiles the scikit-learn model into the named PersistentVolumeClaim
at ``COMPILE_CACHE_DIR``, and the operator creates the revision's Deployment once the Job has ended.
Every serving pod mounts the claim and starts with ``--compile-cache-dir``: it takes the compiled
model from the cache and is ready without compiling (a replica that finds the cache empty, say a
claim replaced since, compiles under the cache's lock, once for all replicas starting together).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from mlrollouts.builders import common
from mlrollouts.builders.common import SERVING_PORT, Object, Owner
from mlrollouts.builders.learner import SNAPSHOT_KEY_FILE, snapshot_key_volume

SERVING_COMPONENT = "serving"
DEFAULT_SERVING_IMAGE = "mlrollouts/serving:0.1.0"
COMPILE_CACHE_VOLUME = "compile-cache"
COMPILE_CACHE_DIR = "/var/cache/mlserving/compiled"
COMPILE_CONTAINER = "compile"
COMPILE_COMPONENT = "compile"
COMPILE_JOB_BACKOFF_LIMIT = 3
COMPILE_JOB_DEADLINE_SECONDS = 1800
"""A compile still running after this is ended (the Job fails) and the replicas compile for themselves."""
COMPILE_JOB_TTL_SECONDS = 3600
"""An ended compile Job is removed by the cluster after this; the revision's Deployment needs it no more."""
DEFAULT_RESOURCES: dict[str, Any] = {
    "requests": {"cpu": "100m", "memory": "256Mi"},
    "limits": {"memory": "1Gi"},
}


@dataclass(frozen=True)
class ServingLearning:
    """Where a learning deployment's serving pods reach the learner and its snapshots."""

    learner_url: str
    snapshot_uri: str


@dataclass(frozen=True)
class ServingRevision:
    """Everything that shapes the pods of one revision (the hashed, pod-affecting part of the spec)."""

    owner: Owner
    revision: str
    model_name: str
    model_uri: str
    model_format: str = "auto"
    image: str = DEFAULT_SERVING_IMAGE
    replicas: int = 1
    resources: Mapping[str, Any] = field(default_factory=lambda: dict(DEFAULT_RESOURCES))
    env: Mapping[str, str] = field(default_factory=dict)
    image_pull_policy: str = "IfNotPresent"
    service_account: str | None = None
    extra_args: tuple[str, ...] = ()
    learning: ServingLearning | None = None
    compile_cache_claim: str | None = None
    """PersistentVolumeClaim shared by the replicas as their compile cache (None: each compiles)."""

    @property
    def name(self) -> str:
        return common.revision_name(self.owner.name, self.revision)


def serving_args(rev: ServingRevision) -> list[str]:
    return [
        "serve",
        "--model-name",
        rev.model_name,
        "--model-uri",
        rev.model_uri,
        "--format",
        rev.model_format,
        "--host",
        "0.0.0.0",
        "--port",
        str(SERVING_PORT),
        *learning_args(rev.learning),
        *(("--compile-cache-dir", COMPILE_CACHE_DIR) if rev.compile_cache_claim else ()),
        *rev.extra_args,
    ]


def learning_args(learning: ServingLearning | None) -> list[str]:
    if learning is None:
        return []
    return [
        *("--learner-url", learning.learner_url),
        *("--snapshot-uri", learning.snapshot_uri),
        *("--snapshot-key-file", SNAPSHOT_KEY_FILE),
    ]


def pod_volumes(rev: ServingRevision) -> tuple[list[Object], list[Object]]:
    """The volumes of a serving pod (and of the revision's compile Job) and their mounts."""
    volume, mount = common.tmp_volume()
    volumes, mounts = [volume], [mount]
    if rev.learning is not None:
        key_volume, key_mount = snapshot_key_volume(rev.owner)
        volumes.append(key_volume)
        mounts.append(key_mount)
    if rev.compile_cache_claim:
        volumes.append(
            {"name": COMPILE_CACHE_VOLUME, "persistentVolumeClaim": {"claimName": rev.compile_cache_claim}}
        )
        mounts.append({"name": COMPILE_CACHE_VOLUME, "mountPath": COMPILE_CACHE_DIR})
    return volumes, mounts


def serving_env(rev: ServingRevision) -> list[Object]:
    return [
        {"name": "MLSERVING_MODEL", "value": rev.model_name},
        {"name": "MLSERVING_REVISION", "value": rev.revision},
        *({"name": k, "value": v} for k, v in sorted(rev.env.items())),
    ]


def serving_deployment(rev: ServingRevision, replicas: int | None = None) -> Object:
    """The Deployment of one revision; ``replicas`` overrides ``rev.replicas`` (scale down / replica ratio)."""
    volumes, mounts = pod_volumes(rev)
    env = serving_env(rev)
    pod_spec: Object = {
        "securityContext": common.pod_security_context(),
        "automountServiceAccountToken": False,
        "containers": [
            {
                "name": "server",
                "image": rev.image,
                "imagePullPolicy": rev.image_pull_policy,
                "command": ["mlserving"],
                "args": serving_args(rev),
                "env": env,
                "ports": common.http_ports(),
                **common.health_probes(startup_failures=60),
                "resources": dict(rev.resources),
                "securityContext": common.container_security_context(),
                "volumeMounts": mounts,
                # a server that refuses its model for good exits with a report the operator reads
                "terminationMessagePolicy": "FallbackToLogsOnError",
            }
        ],
        "volumes": volumes,
        "terminationGracePeriodSeconds": 30,
    }
    if rev.service_account:
        pod_spec["serviceAccountName"] = rev.service_account
    return common.deployment(
        rev.owner,
        rev.name,
        SERVING_COMPONENT,
        replicas=rev.replicas if replicas is None else replicas,
        strategy=common.rolling_update(),
        pod_spec=pod_spec,
        revision=rev.revision,
    )


def compile_job_name(owner: Owner, revision: str) -> str:
    return f"{common.revision_name(owner.name, revision)}-compile"


def compile_job(rev: ServingRevision) -> Object:
    """The Job that fills the compile cache of one revision before its Deployment is created: the
    server's image, arguments, environment and volumes (the same model, options and cache key).
    ``--best-effort``: a model it cannot fetch or load ends the Job well all the same, and the
    server reports the refusal the way the operator reads it, instead of a revision stuck compiling."""
    volumes, mounts = pod_volumes(rev)
    container = {
        "name": COMPILE_CONTAINER,
        "image": rev.image,
        "imagePullPolicy": rev.image_pull_policy,
        "command": ["mlserving"],
        "args": ["compile", "--best-effort", *serving_args(rev)[1:]],
        "env": serving_env(rev),
        "resources": dict(rev.resources),
        "securityContext": common.container_security_context(),
        "volumeMounts": mounts,
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    pod_spec: Object = {
        "securityContext": common.pod_security_context(),
        "automountServiceAccountToken": False,
        "restartPolicy": "OnFailure",
        "containers": [container],
        "volumes": volumes,
    }
    if rev.service_account:
        pod_spec["serviceAccountName"] = rev.service_account
    labels = common.metadata(rev.owner, "", COMPILE_COMPONENT, revision=rev.revision)["labels"]
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": common.metadata(
            rev.owner, compile_job_name(rev.owner, rev.revision), COMPILE_COMPONENT, revision=rev.revision
        ),
        "spec": {
            "backoffLimit": COMPILE_JOB_BACKOFF_LIMIT,
            "activeDeadlineSeconds": COMPILE_JOB_DEADLINE_SECONDS,
            "ttlSecondsAfterFinished": COMPILE_JOB_TTL_SECONDS,
            "template": {"metadata": {"labels": labels}, "spec": pod_spec},
        },
    }


def job_finished(job: Object | None) -> str | None:
    """``Complete`` or ``Failed`` once a Job has ended (its condition of that type is True); else None."""
    for condition in ((job or {}).get("status") or {}).get("conditions") or []:
        if condition.get("type") in ("Complete", "Failed") and condition.get("status") == "True":
            return str(condition["type"])
    return None


def serving_selector(owner: Owner) -> str:
    """The label selector of the serving pods of every revision, as the scale subresource reports it."""
    return ",".join(f"{k}={v}" for k, v in common.selector_labels(owner, SERVING_COMPONENT).items())


def serving_service(owner: Owner, revision: str) -> Object:
    """The Service of one revision, selecting only that revision's pods."""
    return common.http_service(owner, common.revision_name(owner.name, revision), SERVING_COMPONENT, revision)


def all_revisions_service(owner: Owner) -> Object:
    """Entry point ``<name>`` over the pods of every revision (Service provider: replica-ratio split)."""
    return common.http_service(owner, owner.name, SERVING_COMPONENT)


def weighted_replicas(
    total: int,
    weights: Mapping[str, int],
    planned: Mapping[str, int],
    *,
    stable: str | None,
    candidate: str | None,
    shadow: tuple[str, int] | None = None,
    candidate_ready: int = 0,
) -> dict[str, int]:
    """Split ``total`` (``spec.serving.replicas``, which an autoscaler may set) between the stable and the
    candidate revision in proportion to their traffic weights.

    Each share is rounded up, so a revision never has fewer pods than its share of traffic needs, and a
    revision in the rollout keeps at least one pod (the candidate must become ready before it gets
    traffic; the stable is what a rollback returns to). The stable gives up pods only as candidate pods
    become ready, so capacity never dips while traffic moves. A revision ``planned`` at 0 (scaled down)
    and every other revision keep their planned count.
    """
    out = dict(planned)
    if candidate is None or candidate == stable or not planned.get(candidate):
        return out
    candidate_percent = max(weights.get(candidate, 0), shadow[1] if shadow and shadow[0] == candidate else 0)
    candidate_count = max(1, min(total, _share(total, candidate_percent)))
    out[candidate] = candidate_count
    if stable is not None and planned.get(stable):
        stable_share = _share(total, weights.get(stable, 0))
        not_yet_taken_over = total - min(candidate_ready, candidate_count)
        out[stable] = max(1, stable_share, not_yet_taken_over)
    return out


def _share(total: int, percent: int) -> int:
    return -(-total * percent // 100)  # ceiling without floats
