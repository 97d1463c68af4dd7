"""The online learner of a ModelDeployment: Deployment ``<name>-learner`` (one replica, Recreate: the
learner is the only writer of its data log and snapshots, so two must never run at once), Service
``<name>-learner``, and Secret ``<name>-snapshot-key`` whose key signs every snapshot. The serving
replicas log requests to the learner, forward feedback to it, and hot-load its signed snapshots.

The key is mounted as a file, never put in the environment; serving pods mount it read-only too,
to verify what they load.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from mlrollouts.builders.common import (
    SERVING_PORT,
    Object,
    Owner,
    container_security_context,
    http_probe,
    metadata,
    pod_security_context,
    selector_labels,
    tmp_volume,
)

LEARNER_COMPONENT = "learner"
SNAPSHOT_KEY_FIELD = "signing-key"
SNAPSHOT_KEY_MIN_BYTES = 16
SNAPSHOT_KEY_DIR = "/var/run/mlrollouts/snapshot-key"
SNAPSHOT_KEY_FILE = f"{SNAPSHOT_KEY_DIR}/{SNAPSHOT_KEY_FIELD}"
SNAPSHOT_KEY_VOLUME = "snapshot-key"


def learner_name(owner: Owner) -> str:
    return f"{owner.name}-learner"


def snapshot_key_secret_name(owner: Owner) -> str:
    return f"{owner.name}-snapshot-key"


@dataclass(frozen=True)
class LearnerSpec:
    """Everything that shapes the learner pod."""

    owner: Owner
    model_name: str
    model_uri: str
    storage_uri: str
    image: str
    resources: Mapping[str, Any]
    algorithm: str | None = None
    params: Mapping[str, Any] = field(default_factory=dict)
    snapshot_every: int = 1000
    batch_size: int = 32
    window: int = 500
    max_delay_seconds: float = 3600.0
    label_field: str = "label"
    allow_unsafe_pickle: bool = False
    env: Mapping[str, str] = field(default_factory=dict)
    image_pull_policy: str = "IfNotPresent"


def snapshot_key_secret(owner: Owner, key: str) -> Object:
    """The key that signs snapshots; ``key`` comes from the caller (created once, never rotated:
    snapshots signed before would no longer verify)."""
    if len(key.encode()) < SNAPSHOT_KEY_MIN_BYTES:
        raise ValueError(f"snapshot signing key: needs at least {SNAPSHOT_KEY_MIN_BYTES} bytes")
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": metadata(owner, snapshot_key_secret_name(owner), LEARNER_COMPONENT),
        "type": "Opaque",
        "data": {SNAPSHOT_KEY_FIELD: base64.b64encode(key.encode()).decode()},
    }


def snapshot_key_volume(owner: Owner) -> tuple[Object, Object]:
    """The signing key as a read-only file (volume, mount) for the learner and serving pods."""
    volume = {
        "name": SNAPSHOT_KEY_VOLUME,
        "secret": {
            "secretName": snapshot_key_secret_name(owner),
            "defaultMode": 0o440,
            "items": [{"key": SNAPSHOT_KEY_FIELD, "path": SNAPSHOT_KEY_FIELD}],
        },
    }
    return volume, {"name": SNAPSHOT_KEY_VOLUME, "mountPath": SNAPSHOT_KEY_DIR, "readOnly": True}


def learner_args(spec: LearnerSpec) -> list[str]:
    args = [
        "learn",
        *("--model-name", spec.model_name),
        *("--model-uri", spec.model_uri),
        *("--storage-uri", spec.storage_uri),
        *("--signing-key-file", SNAPSHOT_KEY_FILE),
        *("--snapshot-every", str(spec.snapshot_every)),
        *("--batch-size", str(spec.batch_size)),
        *("--window", str(spec.window)),
        *("--max-delay", f"{spec.max_delay_seconds:g}"),
        *("--label-field", spec.label_field),
        *("--download-dir", "/tmp/models"),
        *("--host", "0.0.0.0"),
        *("--port", str(SERVING_PORT)),
    ]
    if spec.algorithm:
        args += ["--algorithm", spec.algorithm]
    if spec.params:
        args += ["--estimator-params", json.dumps(dict(spec.params), sort_keys=True, separators=(",", ":"))]
    if spec.allow_unsafe_pickle:
        args.append("--allow-unsafe-pickle")
    return args


def learner_container(spec: LearnerSpec, key_mount: Object, tmp_mount: Object) -> Object:
    return {
        "name": "learner",
        "image": spec.image,
        "imagePullPolicy": spec.image_pull_policy,
        "command": ["mlserving"],
        "args": learner_args(spec),
        "env": [
            {"name": "MLLEARNER_MODEL", "value": spec.model_name},
            *({"name": k, "value": v} for k, v in sorted(spec.env.items())),
        ],
        "ports": [{"name": "http", "containerPort": SERVING_PORT, "protocol": "TCP"}],
        # ready once it has resumed from its last snapshot and replayed the data log
        "readinessProbe": http_probe("/v2/health/ready", period=2, failure_threshold=3),
        "livenessProbe": http_probe("/v2/health/live", period=10, failure_threshold=3),
        "startupProbe": http_probe("/v2/health/live", period=2, failure_threshold=90),
        "resources": dict(spec.resources),
        "securityContext": container_security_context(),
        "volumeMounts": [tmp_mount, key_mount],
    }


def learner_deployment(spec: LearnerSpec) -> Object:
    owner = spec.owner
    tmp, tmp_mount = tmp_volume()
    key, key_mount = snapshot_key_volume(owner)
    pod_meta = metadata(
        owner,
        learner_name(owner),
        LEARNER_COMPONENT,
        annotations={
            "prometheus.io/scrape": "true",
            "prometheus.io/port": str(SERVING_PORT),
            "prometheus.io/path": "/metrics",
        },
    )
    for key_name in ("name", "namespace", "ownerReferences"):
        pod_meta.pop(key_name, None)
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata(owner, learner_name(owner), LEARNER_COMPONENT),
        "spec": {
            "replicas": 1,
            "revisionHistoryLimit": 2,
            "selector": {"matchLabels": selector_labels(owner, LEARNER_COMPONENT)},
            # never two learners at once: each would append to the log and publish snapshots
            "strategy": {"type": "Recreate"},
            "template": {
                "metadata": pod_meta,
                "spec": {
                    "securityContext": pod_security_context(),
                    "automountServiceAccountToken": False,
                    "containers": [learner_container(spec, key_mount, tmp_mount)],
                    "volumes": [tmp, key],
                    # the learner writes the rows still queued before it exits
                    "terminationGracePeriodSeconds": 30,
                },
            },
        },
    }


def learner_service(owner: Owner) -> Object:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(owner, learner_name(owner), LEARNER_COMPONENT),
        "spec": {
            "type": "ClusterIP",
            "selector": selector_labels(owner, LEARNER_COMPONENT),
            "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}],
        },
    }
