"""`mlrollouts undo NAME [--to-revision REV] [--apply]`: go back to an earlier revision through the spec.

The spec belongs to its owner (a person, or Git under Argo CD or Flux), so undo never edits it
silently: it prints the exact ``kubectl patch`` and the field changes to make where the manifest
lives; ``--apply`` makes the patch itself. The revision's ``spec.model`` and ``spec.serving`` come
from the revision history in the status (``status.revisions[].template``), and the patch is checked
to hash to the revision asked for before it is shown.
"""

from __future__ import annotations

import argparse
import json
import shlex
from typing import Any

from mlrollouts.api import MODEL_DEPLOYMENT, ModelDeployment
from mlrollouts.cli import actions
from mlrollouts.cli.plugin import (
    Cluster,
    PluginError,
    _cluster,
    _connection_flags,
    _deployment_ref,
    add_command,
)
from mlrollouts.rollout.resource import target_revision

Object = dict[str, Any]
PATCHED = ("model", "serving")
MIN_PREFIX = 4


class UndoError(PluginError):
    pass


def merge_patch(current: Any, wanted: Any) -> Any:
    """The JSON merge patch (RFC 7386) that turns ``current`` into ``wanted``."""
    if not isinstance(current, dict) or not isinstance(wanted, dict):
        return wanted
    patch: Object = {key: None for key in current if key not in wanted}
    for key, value in wanted.items():
        if key not in current:
            if not _empty(value):
                patch[key] = value
        elif current[key] != value:
            patch[key] = merge_patch(current[key], value)
    return patch


def _empty(value: Any) -> bool:
    """An unset field and an empty one describe the same revision: a patch need not set it."""
    if isinstance(value, dict):
        return all(_empty(v) for v in value.values())
    return value is None or value == []


def apply_merge_patch(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = apply_merge_patch(result.get(key), value)
    return result


def changes(current: Any, patch: Any, path: str = "spec") -> list[str]:
    """One ``path: old -> new`` line per field the patch sets or removes."""
    if not isinstance(patch, dict):
        return [f"{path}: {_show(current)} -> {_show(patch)}"]
    lines = []
    for key, value in patch.items():
        old = current.get(key) if isinstance(current, dict) else None
        if value is None:
            lines.append(f"{path}.{key}: {_show(old)} -> (removed)")
        elif isinstance(value, dict) and isinstance(old, dict):
            lines += changes(old, value, f"{path}.{key}")
        else:
            lines.append(f"{path}.{key}: {_show(old)} -> {_show(value)}")
    return lines


def _show(value: Any) -> str:
    return "(unset)" if value is None else json.dumps(value, sort_keys=True)


def current_revision(obj: Object) -> str:
    try:
        return target_revision(ModelDeployment.model_validate(obj))
    except ValueError as exc:
        raise UndoError(f"the spec of {obj['metadata'].get('name')} does not validate: {exc}") from None


def choose(obj: Object, wanted: str | None) -> Object:
    """The revision record to go back to: ``wanted`` (a revision or a unique prefix of one), or by
    default the stable revision when the spec asks for another one (a rollout in progress or rolled
    back), else the newest earlier revision that was not rolled back."""
    status = obj.get("status") or {}
    records = [r for r in status.get("revisions") or [] if r.get("revision")]
    current = current_revision(obj)
    if wanted is not None:
        found = [r for r in records if r["revision"] == wanted] or (
            [r for r in records if r["revision"].startswith(wanted)] if len(wanted) >= MIN_PREFIX else []
        )
        if len(found) != 1:
            known = ", ".join(r["revision"] for r in records) or "none"
            what = "is ambiguous" if found else "is not in the revision history"
            raise UndoError(f"revision {wanted!r} {what} (known revisions: {known})")
        chosen: Object = found[0]
    else:
        stable = status.get("stableRevision")
        earlier = [r for r in records if r["revision"] != current and r.get("outcome") != "RolledBack"]
        by_stable = [r for r in earlier if r["revision"] == stable]
        if not (by_stable or earlier):
            raise UndoError("there is no earlier revision to go back to")
        chosen = (by_stable or earlier)[-1]
    if chosen["revision"] == current:
        raise UndoError(f"revision {current} is already the one spec.model and spec.serving describe")
    if not isinstance(chosen.get("template"), dict):
        raise UndoError(
            f"revision {chosen['revision']} was recorded without its spec (model {chosen.get('modelUri') or '?'}, "
            f"version {chosen.get('modelVersion') or '?'}): set spec.model and spec.serving by hand"
        )
    return chosen


def undo_patch(obj: Object, record: Object) -> Object:
    """The merge patch of ``spec`` that brings back ``record``'s revision (replicas stay as they are),
    checked to hash to that revision."""
    spec = obj.get("spec") or {}
    template: Object = record["template"]
    patch: Object = {}
    for part in PATCHED:
        current = dict(spec.get(part) or {})
        wanted = dict(template.get(part) or {})
        if part == "serving" and "replicas" in current:
            wanted["replicas"] = current["replicas"]
        if current != wanted:
            patch[part] = merge_patch(current, wanted)
    restored = {**obj, "spec": apply_merge_patch(spec, patch)}
    if current_revision(restored) != record["revision"]:
        raise UndoError(
            f"the recorded spec of revision {record['revision']} no longer hashes to it (the schema changed "
            "since); set spec.model and spec.serving by hand"
        )
    return {"spec": patch}


def kubectl_command(name: str, namespace: str, patch: Object) -> str:
    body = json.dumps(patch, separators=(",", ":"), sort_keys=True)
    return (
        f"kubectl patch {MODEL_DEPLOYMENT.singular} {name} -n {namespace} --type merge -p {shlex.quote(body)}"
    )


def cmd_undo(args: argparse.Namespace) -> int:
    kind, name = _deployment_ref(args)
    cluster: Cluster = _cluster(args)
    obj = cluster.get(kind, name)
    record = choose(obj, args.to_revision)
    patch = undo_patch(obj, record)
    revision = record["revision"]
    about = ", ".join(
        f"{label} {record[key]}"
        for label, key in (("model", "modelUri"), ("version", "modelVersion"))
        if record.get(key)
    )
    lines = [f"Back to revision {revision}" + (f" ({about})" if about else "") + ":"]
    lines += [f"  {line}" for line in changes(obj.get("spec") or {}, patch["spec"])]
    if not args.apply:
        lines += [
            "",
            kubectl_command(name, cluster.namespace, patch),
            "",
            "If the manifest lives in Git (Argo CD, Flux), change these fields there instead: a sync would "
            "revert a patch.",
            f"`{actions.command_prefix()} undo {name} --to-revision {revision} --apply` patches it now.",
        ]
        print("\n".join(lines))
        return 0
    meta = obj.get("metadata") or {}
    cluster.patch(kind, name, {**patch, "metadata": {"resourceVersion": meta.get("resourceVersion")}})
    lines.append(
        f"{kind.kind} {cluster.namespace}/{name} patched: the operator rolls revision {revision} out "
        "(at once if it is the stable revision, else through the rollout steps)"
    )
    print("\n".join(lines))
    return 0


def register(subparsers: Any) -> None:
    parser = add_command(
        subparsers,
        "undo",
        _connection_flags(),
        cmd_undo,
        help="go back to an earlier revision: prints the spec change (kubectl patch), --apply makes it",
        description="Bring back the spec.model and spec.serving of an earlier revision (from the revision "
        "history in the status). Without --apply nothing is changed: the exact `kubectl patch` is printed, "
        "with the field changes to make in Git when the manifest lives there. The default revision is the "
        "stable one while another is rolled out or was rolled back, else the newest earlier revision that "
        "was not rolled back.",
    )
    parser.add_argument(
        "--to-revision", default=None, metavar="REV", help="a revision from `history` (or a prefix)"
    )
    parser.add_argument(
        "--apply", action="store_true", help="patch the spec now instead of printing the patch"
    )
