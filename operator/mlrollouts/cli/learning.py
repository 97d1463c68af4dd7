"""`mlrollouts learning pin|unpin|history|export NAME`: steer and reproduce an online-learning model.

``pin`` and ``unpin`` change the desired state (``spec.learning.pinnedSnapshot``), so a pin survives
restarts and shows in diffs; the operator asks the learner to hold it and serving replicas follow
without a restart. ``history`` shows ``status.learning.snapshots``. ``export`` reads the learner's
storage directly: it writes a snapshot and the exact production rows it learned from (Delta time
travel to its data version), enough to retrain it (``mlserving.learning.export.retrain``).
"""

from __future__ import annotations

import argparse
import base64
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mlrollouts.api import MODEL_DEPLOYMENT
from mlrollouts.cli.plugin import Cluster, PluginError, _connection_flags, add_command, age, table

Object = dict[str, Any]
SNAPSHOT_KEY_FIELD = "signing-key"


def _learning(obj: Object, name: str) -> tuple[Object, Object]:
    """``spec.learning`` and ``status.learning`` of a ModelDeployment that learns online."""
    spec = (obj.get("spec") or {}).get("learning") or {}
    if not spec.get("enabled"):
        raise PluginError(
            f'ModelDeployment "{name}" does not learn online (spec.learning.enabled is not true)'
        )
    return spec, (obj.get("status") or {}).get("learning") or {}


def _cluster(args: argparse.Namespace) -> Cluster:
    return Cluster(args.kubeconfig, args.context, args.namespace)


def cmd_pin(args: argparse.Namespace) -> int:
    cluster = _cluster(args)
    _, status = _learning(cluster.get(MODEL_DEPLOYMENT, args.name), args.name)
    latest = status.get("latestSnapshot")
    if not args.force and latest is not None and args.snapshot > latest:
        raise PluginError(
            f"snapshot {args.snapshot} is not published yet (the latest is {latest}); --force pins it anyway"
        )
    bad = {
        s.get("version"): s.get("reason") for s in status.get("snapshots") or [] if s.get("verdict") == "Bad"
    }
    cluster.patch(MODEL_DEPLOYMENT, args.name, {"spec": {"learning": {"pinnedSnapshot": args.snapshot}}})
    print(
        f"ModelDeployment {cluster.namespace}/{args.name}: spec.learning.pinnedSnapshot={args.snapshot}; "
        f"the operator pins serving to snapshot {args.snapshot} (learning goes on)"
    )
    if args.snapshot in bad:
        print(
            f"warning: the guard marked snapshot {args.snapshot} bad: {bad[args.snapshot]}", file=sys.stderr
        )
    return 0


def cmd_unpin(args: argparse.Namespace) -> int:
    cluster = _cluster(args)
    spec, _ = _learning(cluster.get(MODEL_DEPLOYMENT, args.name), args.name)
    if spec.get("pinnedSnapshot") is None:
        print(f"ModelDeployment {cluster.namespace}/{args.name} is not pinned (spec.learning.pinnedSnapshot)")
        return 0
    cluster.patch(MODEL_DEPLOYMENT, args.name, {"spec": {"learning": {"pinnedSnapshot": None}}})
    print(
        f"ModelDeployment {cluster.namespace}/{args.name}: spec.learning.pinnedSnapshot removed; serving "
        "follows the newest good snapshot"
    )
    return 0


def _metrics(values: Any) -> str:
    if not isinstance(values, dict) or not values:
        return "-"
    return ", ".join(f"{k}={v:.4g}" for k, v in sorted(values.items()) if isinstance(v, int | float))


def canary_line(canary: Any) -> str:
    """The snapshot canary of promotion Canary in one line (empty without one)."""
    if not isinstance(canary, dict):
        return ""
    candidate = canary.get("candidateSnapshot")
    where = (
        f"candidate {candidate} at {canary.get('weight', 0)} % (step {(canary.get('currentStep') or 0) + 1})"
        if candidate is not None
        else "no candidate"
    )
    refused = canary.get("refusedSnapshot")
    return (
        f"\nsnapshot canary {canary.get('phase', '-')}: stable {canary.get('stableSnapshot', '-')}, {where}"
        + (f", last refused {refused}" if refused is not None else "")
        + (f"; {canary['message']}" if canary.get("message") else "")
    )


def render_learning_history(status: Object, now: datetime) -> str:
    """``status.learning`` as a header line and one table row per snapshot, newest last."""
    pinned = status.get("pinned")
    head = (
        f"serving snapshot {status.get('servingSnapshot', '-')}, latest {status.get('latestSnapshot', '-')}, "
        f"last good {status.get('lastGoodSnapshot', '-')}"
        + (f", pinned by {status.get('pinnedBy', '?')} to {pinned}" if pinned is not None else "")
        + f"; {status.get('samples', 0)} samples learned, now {_metrics(status.get('metrics'))}"
    )
    head += canary_line(status.get("canary"))
    marked = (("servingSnapshot", "serving"), ("pinned", "pinned"), ("lastGoodSnapshot", "last good"))

    def marks(version: Any) -> str:
        return ", ".join(text for field, text in marked if status.get(field) == version)

    rows = [
        [
            s.get("version"),
            s.get("parent"),
            age(s.get("createdAt"), now),
            s.get("samples"),
            _metrics(s.get("metrics")),
            s.get("dataVersion"),
            s.get("dataRange"),
            s.get("verdict"),
            marks(s.get("version")),
        ]
        for s in status.get("snapshots") or []
    ]
    if not rows:
        return f"{head}\nNo snapshots recorded yet."
    header = ["SNAPSHOT", "PARENT", "AGE", "SAMPLES", "METRICS", "DATA VERSION", "ROWS", "VERDICT", ""]
    return f"{head}\n{table(header, rows)}"


def cmd_history(args: argparse.Namespace) -> int:
    cluster = _cluster(args)
    _, status = _learning(cluster.get(MODEL_DEPLOYMENT, args.name), args.name)
    print(render_learning_history(status, datetime.now(UTC)))
    return 0


def _signing_key(cluster: Cluster, name: str, key_file: str | None) -> bytes:
    """The snapshot-signing key: from ``--signing-key-file``, else Secret ``<name>-snapshot-key``."""
    from mlserving.learning.manifest import SnapshotError, read_key_file

    if key_file:
        try:
            return read_key_file(key_file)
        except SnapshotError as exc:
            raise PluginError(f"--signing-key-file: {exc}") from None
    secret_name = f"{name}-snapshot-key"
    try:
        secret = cluster.kube.get("v1", "Secret", cluster.namespace, secret_name)
    except Exception as exc:
        raise PluginError(
            f"cannot read Secret {secret_name} ({exc}); pass the key with --signing-key-file"
        ) from None
    encoded = ((secret or {}).get("data") or {}).get(SNAPSHOT_KEY_FIELD)
    if not encoded:
        raise PluginError(f"Secret {secret_name} holds no {SNAPSHOT_KEY_FIELD}; pass --signing-key-file")
    return base64.b64decode(encoded)


def cmd_export(args: argparse.Namespace) -> int:
    from mlserving.learning.export import export_snapshot
    from mlserving.learning.location import StorageError, StorageLocation, parse_storage_options
    from mlserving.learning.manifest import SnapshotError

    cluster = _cluster(args)
    spec, _ = _learning(cluster.get(MODEL_DEPLOYMENT, args.name), args.name)
    uri = (spec.get("storage") or {}).get("uri")
    if not uri:
        raise PluginError(f'ModelDeployment "{args.name}" has no spec.learning.storage.uri')
    key = _signing_key(cluster, args.name, args.signing_key_file)
    try:
        location = StorageLocation(uri, parse_storage_options(args.storage_option))
        summary = export_snapshot(location, key, args.snapshot, Path(args.output))
    except (SnapshotError, StorageError) as exc:
        raise PluginError(str(exc)) from None
    print(
        f"snapshot {summary.snapshot} of {args.name} exported to {summary.directory}: its files, the initial "
        f"model (snapshot {summary.initial_snapshot}) and {summary.rows} rows (seq {summary.seq_start}.."
        f"{summary.seq_end}, data version {summary.data_version})"
    )
    return 0


def _add(
    sub: Any,
    name: str,
    conn: argparse.ArgumentParser,
    text: str,
    handler: Callable[[argparse.Namespace], int],
) -> argparse.ArgumentParser:
    return add_command(sub, name, conn, handler, help=text, target="ModelDeployment NAME")


def _snapshot_number(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r}: a snapshot number is an integer >= 0")
    return int(text)


def register(subparsers: Any) -> None:
    conn = _connection_flags()
    learning = subparsers.add_parser(
        "learning",
        help="pin, unpin, list and export the snapshots of an online-learning model",
        description=__doc__.splitlines()[0] if __doc__ else None,
    )
    sub = learning.add_subparsers(dest="learning_command", metavar="COMMAND", required=True)
    pin = _add(sub, "pin", conn, "serve snapshot N from now on (sets spec.learning.pinnedSnapshot)", cmd_pin)
    pin.add_argument("snapshot", type=_snapshot_number, help="snapshot number N")
    pin.add_argument("--force", action="store_true", help="pin a snapshot the status does not list yet")
    _add(
        sub,
        "unpin",
        conn,
        "serve the newest good snapshot again (clears spec.learning.pinnedSnapshot)",
        cmd_unpin,
    )
    _add(
        sub,
        "history",
        conn,
        "the snapshots with their metrics, data versions and guard verdicts",
        cmd_history,
    )
    export = _add(
        sub, "export", conn, "write a snapshot and the exact rows it learned from to a directory", cmd_export
    )
    export.add_argument("--snapshot", type=_snapshot_number, required=True, help="snapshot number N")
    export.add_argument("--output", required=True, help="directory to write to (created)")
    export.add_argument(
        "--signing-key-file", default=None, help="the snapshot key (default: read Secret NAME-snapshot-key)"
    )
    export.add_argument(
        "--storage-option",
        action="append",
        default=[],
        help="KEY=VALUE storage option (repeatable), e.g. AWS_ENDPOINT_URL=http://127.0.0.1:9000",
    )
