"""The online learner of a ModelDeployment: Deployment ``<name>-learner`` (one replica, Recreate: the
learner is the only writer of its data log and snapshots, so two must never run at once), Service
``<name>-learner``, and Secret ``<name>-snapshot-key`` whose key signs every snapshot. The serving
replicas log requests to the learner, forward feedback to it, and hot-load its signed snapshots.

The key is mounted as a file, never put in the environment; serving pods mount it read-only too,
to verify what they load.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from mlrollouts.builders import common
from mlrollouts.builders.common import SERVING_PORT, Object, Owner

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
    hold_serving: bool = False
    """promotion Canary: serving moves to a new snapshot only when the operator pins it."""
    keep_snapshots: int | None = None
    """Snapshots the learner keeps in storage (None: all)."""


def snapshot_key_secret(owner: Owner, key: str) -> Object:
    """The key that signs snapshots; ``key`` comes from the caller (created once, never rotated:
    snapshots signed before would no longer verify)."""
    return common.key_secret(
        owner,
        snapshot_key_secret_name(owner),
        LEARNER_COMPONENT,
        SNAPSHOT_KEY_FIELD,
        key,
        min_bytes=SNAPSHOT_KEY_MIN_BYTES,
        what="snapshot signing key",
    )


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
    if spec.hold_serving:
        args.append("--hold-serving")
    if spec.keep_snapshots is not None:
        args += ["--keep-snapshots", str(spec.keep_snapshots)]
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
        "ports": common.http_ports(),
        # ready once it has resumed from its last snapshot and replayed the data log
        **common.health_probes(startup_failures=90),
        "resources": dict(spec.resources),
        "securityContext": common.container_security_context(),
        "volumeMounts": [tmp_mount, key_mount],
    }


def learner_deployment(spec: LearnerSpec) -> Object:
    owner = spec.owner
    tmp, tmp_mount = common.tmp_volume()
    key, key_mount = snapshot_key_volume(owner)
    pod_spec = {
        "securityContext": common.pod_security_context(),
        "automountServiceAccountToken": False,
        "containers": [learner_container(spec, key_mount, tmp_mount)],
        "volumes": [tmp, key],
        # the learner writes the rows still queued before it exits
        "terminationGracePeriodSeconds": 30,
    }
    return common.deployment(
        owner,
        learner_name(owner),
        LEARNER_COMPONENT,
        replicas=1,
        # never two learners at once: each would append to the log and publish snapshots
        strategy={"type": "Recreate"},
        pod_spec=pod_spec,
    )


def learner_service(owner: Owner) -> Object:
    return common.http_service(owner, learner_name(owner), LEARNER_COMPONENT)
