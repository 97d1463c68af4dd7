"""Configuration of the model server: command-line flags and ``MLSERVING_*`` environment variables.

Every field can be set through the environment (``MLSERVING_<FIELD>``, e.g. ``MLSERVING_MODEL_URI``;
the name is not case-sensitive); flags given to ``mlserving serve`` win over the environment.
``MLSERVING_MODEL`` and ``MLSERVING_REVISION`` are the ``model`` and ``revision`` labels of every
metric, so that Prometheus queries do not depend on scrape relabelling.

Online learning is off unless configured: ``learner_url`` logs every served request to the learner
and forwards labelled feedback to it; ``snapshot_uri`` with ``snapshot_key_file`` hot-loads the
learner's signed snapshots.

The settings are read by a small parser of their own rather than pydantic-settings: the model
server is one process per replica, and pydantic with pydantic-settings would add about 12 MB to the
memory of each. Values are converted as pydantic does it (``"8"`` is 8, ``"yes"`` is true,
``MLSERVING_SNAPSHOT_STORAGE_OPTIONS`` is a JSON object) and refusals use pydantic's wording, so
``mlserving serve`` reports a bad value like ``mlserving learn`` does.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field, fields
from typing import Any, Literal, Protocol
from urllib.parse import urlparse

ENV_PREFIX = "MLSERVING_"


class _ModelFields(Protocol):
    model: str
    model_name: str
    trusted_types: str
    s3_endpoint_url: str | None


class ModelSettingsMixin:
    """What the settings of a command that loads a model derive from their fields."""

    @property
    def metric_model(self: _ModelFields) -> str:
        return self.model or self.model_name

    @property
    def trusted_type_list(self: _ModelFields) -> list[str]:
        return [t.strip() for t in self.trusted_types.split(",") if t.strip()]

    def with_s3_endpoint(self: _ModelFields, options: dict[str, str]) -> dict[str, str]:
        """A copy of the storage ``options``, with the command's S3 endpoint unless they name one."""
        options = dict(options)
        if self.s3_endpoint_url:
            options.setdefault("AWS_ENDPOINT_URL", self.s3_endpoint_url)
        return options


class SettingsError(ValueError):
    """Refused settings; ``problems`` holds ``(field, message)`` pairs, field empty for a rule between fields."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        self.problems = problems
        lines = [f"{name} ({ENV_PREFIX}{name.upper()}): {msg}" if name else msg for name, msg in problems]
        super().__init__(f"{len(problems)} invalid setting(s): " + "; ".join(lines))


_REQUIRED: Any = object()


def _rules(
    kind: Any,
    *,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    min_length: int | None = None,
    description: str = "",
) -> dict[str, Any]:
    """What a field accepts: its kind (``str``, ``int``, ``float``, ``bool``, ``dict`` or a tuple of
    choices) and bounds."""
    return {"kind": kind, "ge": ge, "gt": gt, "le": le, "min_length": min_length, "description": description}


def _setting(kind: Any, default: Any = _REQUIRED, **rules: Any) -> Any:
    """A field (required unless it has a ``default``)."""
    return field(default=default, metadata=_rules(kind, **rules))


@dataclass(init=False)
class ServerSettings(ModelSettingsMixin):
    """The model server's settings: keyword arguments win over ``MLSERVING_*`` variables, then defaults."""

    model_name: str = _setting(
        str, min_length=1, description="Name of the model in URLs (/v2/models/<name>)."
    )
    model_uri: str = _setting(str, min_length=1, description="file://, plain path, http(s):// or s3:// URI.")
    format: Literal["auto", "onnx", "sklearn"] = _setting(("auto", "onnx", "sklearn"), "auto")
    model_version: str = _setting(str, "1", min_length=1, description="Version reported in responses.")
    host: str = _setting(str, "0.0.0.0")
    port: int = _setting(int, 8080, ge=0, le=65535)

    # Metric labels (from the pod's environment).
    model: str = _setting(str, "", description="`model` label of the metrics; defaults to model_name.")
    revision: str = _setting(str, "", description="`revision` label of the metrics.")

    # Model fetching.
    model_sha256: str | None = _setting(str, None, description="Expected sha256 of the fetched model file.")
    max_model_bytes: int = _setting(int, 2 * 1024**3, gt=0, description="Largest model file to download.")
    download_dir: str | None = _setting(str, None, description="Where remote models are downloaded.")
    s3_endpoint_url: str | None = _setting(str, None, description="S3 endpoint (e.g. MinIO); else AWS.")
    fetch_timeout_seconds: float = _setting(float, 60.0, gt=0)
    fetch_deadline_seconds: float = _setting(float, 3600.0, gt=0)

    # scikit-learn loading and compilation.
    allow_unsafe_pickle: bool = _setting(
        bool, False, description="Load joblib/pickle files (they can run arbitrary code when loaded)."
    )
    trusted_types: str = _setting(
        str,
        "",
        description="Comma-separated extra types trusted when loading skops files, e.g. sklearn.tree._tree.Tree.",
    )
    compile: Literal["auto", "onnx", "native"] = _setting(
        ("auto", "onnx", "native"),
        "auto",
        description="auto: compile scikit-learn models to ONNX when outputs match, else serve natively.",
    )
    compile_tolerance: float = _setting(
        float, 1e-4, gt=0, description="Max abs difference on the probe batch."
    )
    compile_cache_dir: str | None = _setting(
        str, None, description="Cache of compiled models keyed by the model file's sha256."
    )

    # Execution.
    intra_op_threads: int = _setting(int, 1, ge=0, description="onnxruntime intra-op threads (0: all cores).")
    inter_op_threads: int = _setting(int, 1, ge=0, description="onnxruntime inter-op threads.")
    max_batch_size: int = _setting(
        int, 64, ge=1, description="Adaptive batching: largest merged batch (1: off)."
    )
    max_batch_wait_ms: float = _setting(
        float, 0.0, ge=0, description="Extra wait to fill a batch; 0 merges only requests already queued."
    )

    # Limits and protocol.
    max_body_bytes: int = _setting(int, 16 * 1024 * 1024, gt=0, description="Larger bodies get 413.")
    max_tensor_elements: int = _setting(
        int, 4_000_000, gt=0, description="Largest tensor a request may declare."
    )
    allow_nan: bool = _setting(bool, False, description="Accept NaN/Inf in floating-point inputs.")
    id_key: str | None = _setting(
        str, None, description="HMAC key signing generated response ids (shared by replicas)."
    )
    id_cache_size: int = _setting(
        int, 100_000, ge=1, description="Recent response ids remembered for feedback."
    )
    shutdown_timeout_seconds: float = _setting(float, 20.0, ge=0, description="Drain deadline on SIGTERM.")
    log_level: str = _setting(str, "INFO")

    # Online learning: request logging and feedback forwarding to the learner.
    learner_url: str | None = _setting(
        str, None, description="Base URL of the learner, e.g. http://mymodel-learner:8080 (off when unset)."
    )
    learning_log_queue: int = _setting(
        int, 50_000, ge=1, description="Logged requests held while the learner is slow; more are dropped."
    )
    learning_log_batch: int = _setting(int, 512, ge=1, description="Logged requests per POST to the learner.")
    learning_log_flush_seconds: float = _setting(
        float, 0.05, gt=0, description="Longest time a logged request waits before it is sent."
    )
    learner_timeout_seconds: float = _setting(
        float,
        15.0,
        gt=0,
        description="Longest wait for the learner (feedback is answered once it is written).",
    )

    # Online learning: hot-loading of signed snapshots.
    snapshot_uri: str | None = _setting(
        str, None, description="file:// or s3:// storage URI the learner publishes snapshots under."
    )
    snapshot_key_file: str | None = _setting(
        str, None, description="File holding the key that signs snapshots (a mounted Secret)."
    )
    pinned_snapshot: int | None = _setting(
        int, None, ge=0, description="Serve this snapshot instead of the latest one."
    )
    snapshot_pointer: Literal["serving", "candidate"] = _setting(
        ("serving", "candidate"),
        "serving",
        description="Snapshot pointer followed: serving, or candidate (a snapshot canary's replicas).",
    )
    snapshot_poll_seconds: float = _setting(
        float, 0.5, gt=0, description="Interval between two reads of the latest snapshot pointer."
    )
    snapshot_storage_options: dict[str, str] = field(
        default_factory=dict,
        metadata=_rules(dict, description="AWS_* options of the snapshot storage (endpoint, region, keys)."),
    )

    def __init__(self, **values: Any) -> None:
        environ = _environment()
        problems: list[tuple[str, str]] = []
        for f in fields(self):
            if f.name in values:
                raw, from_env = values[f.name], False
            elif f.name in environ:
                raw, from_env = environ[f.name], True
            elif f.default is not _REQUIRED and f.default is not MISSING:
                setattr(self, f.name, f.default)
                continue
            elif f.default_factory is not MISSING:
                setattr(self, f.name, f.default_factory())
                continue
            else:
                problems.append((f.name, "Field required"))
                continue
            try:
                setattr(self, f.name, _check(f.name, f.metadata, raw, f.default is None, from_env))
            except _Refused as exc:
                problems.append((f.name, str(exc)))
        if problems:
            raise SettingsError(problems)
        try:
            self._snapshot_settings_together()
        except _Refused as exc:
            raise SettingsError([("", str(exc))]) from None

    def _snapshot_settings_together(self) -> None:
        if not self.snapshot_uri:
            self.snapshot_uri = None
            if self.pinned_snapshot is not None:
                raise _Refused("Value error, pinned_snapshot needs snapshot_uri (where the snapshots are)")
            return
        if not self.snapshot_key_file:
            raise _Refused(
                "Value error, snapshot_key_file is required with snapshot_uri: unsigned snapshots are refused"
            )

    @property
    def learning_storage_options(self) -> dict[str, str]:
        """The snapshot storage options, with the server's S3 endpoint unless one is given."""
        return self.with_s3_endpoint(self.snapshot_storage_options)


class _Refused(ValueError):
    """A value a field refuses; the message is the refusal shown to the user."""


def _environment() -> dict[str, str]:
    """The ``MLSERVING_*`` variables by field name (variable names are not case-sensitive)."""
    prefix = ENV_PREFIX.lower()
    return {k.lower().removeprefix(prefix): v for k, v in os.environ.items() if k.lower().startswith(prefix)}


_TRUE = frozenset({"1", "on", "t", "true", "y", "yes"})
_FALSE = frozenset({"0", "off", "f", "false", "n", "no"})
_INTEGRAL = re.compile(r"[+-]?[0-9_]+(\.0*)?")


def _check(name: str, rules: Mapping[str, Any], raw: Any, nullable: bool, from_env: bool) -> Any:
    if raw is None and nullable:
        return None
    kind = rules["kind"]
    value = _convert(kind, raw, from_env)
    if rules["min_length"] is not None and len(value) < rules["min_length"]:
        n = rules["min_length"]
        raise _Refused(f"String should have at least {n} character{'s' if n != 1 else ''}")
    for bound, holds, words in (
        ("ge", lambda v, b: v >= b, "greater than or equal to"),
        ("gt", lambda v, b: v > b, "greater than"),
        ("le", lambda v, b: v <= b, "less than or equal to"),
    ):
        if rules[bound] is not None and not holds(value, rules[bound]):
            raise _Refused(f"Input should be {words} {rules[bound]}")
    return _VALIDATORS.get(name, _same)(value)


def _convert(kind: Any, raw: Any, from_env: bool) -> Any:
    if isinstance(kind, tuple):
        if raw not in kind:
            names = [repr(c) for c in kind]
            raise _Refused(f"Input should be {', '.join(names[:-1])} or {names[-1]}")
        return raw
    if kind is str:
        if not isinstance(raw, str):
            raise _Refused("Input should be a valid string")
        return raw
    if kind is bool:
        return _boolean(raw)
    if kind is int:
        return _integer(raw)
    if kind is float:
        return _number(raw)
    return _string_map(raw, from_env)


def _boolean(raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, int) and raw in (0, 1):
        return bool(raw)
    if isinstance(raw, str) and raw.strip().lower() in _TRUE | _FALSE:
        return raw.strip().lower() in _TRUE
    raise _Refused("Input should be a valid boolean, unable to interpret input")


def _integer(raw: Any) -> int:
    if isinstance(raw, int):
        return int(raw)
    if isinstance(raw, float):
        if not raw.is_integer():
            raise _Refused("Input should be a valid integer, got a number with a fractional part")
        return int(raw)
    if isinstance(raw, str) and _INTEGRAL.fullmatch(raw.strip()):
        try:
            return int(raw.strip().split(".")[0])
        except ValueError:
            pass
    raise _Refused("Input should be a valid integer, unable to parse string as an integer")


def _number(raw: Any) -> float:
    if isinstance(raw, int | float):
        return float(raw)
    if isinstance(raw, str):
        try:
            return float(raw.strip())
        except ValueError:
            pass
    raise _Refused("Input should be a valid number, unable to parse string as a number")


def _string_map(raw: Any, from_env: bool) -> dict[str, str]:
    if from_env and isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError:
            raise _Refused('Input should be a JSON object, e.g. {"AWS_REGION": "eu-west-1"}') from None
    if not isinstance(raw, dict):
        raise _Refused("Input should be a valid dictionary")
    for key, value in raw.items():
        if not isinstance(value, str):
            raise _Refused(f"{key}: Input should be a valid string")
    return dict(raw)


def _same(value: Any) -> Any:
    return value


def _sha256_hex(value: str | None) -> str | None:
    if value is None or value == "":
        return None
    value = value.strip().lower()
    if len(value) != 64 or any(c not in "0123456789abcdef" for c in value):
        raise _Refused("Value error, model_sha256 must be 64 hexadecimal characters")
    return value


def _http_url(value: str | None) -> str | None:
    if value is None or value == "":
        return None
    parsed = urlparse(value)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise _Refused(f"Value error, learner_url {value!r} must be an http:// or https:// URL")
    return value.rstrip("/")


_VALIDATORS = {"model_sha256": _sha256_hex, "learner_url": _http_url}


# --------------------------------------------------------------------------- flags

# Repeatable flags whose values become one field.
_JOINED = {"trust_type": "trusted_types"}
_STORAGE_OPTIONS = {"snapshot_storage_option": "snapshot_storage_options"}


def settings_from_flags(command: str, args: argparse.Namespace) -> ServerSettings | None:
    """The settings of the environment with the flags given; None once every refusal is on stderr.

    What ``mlserving.cli_flags.settings_from_flags`` does for the pydantic settings of the other
    commands, with the same messages: ``mlserving serve: --port (MLSERVING_PORT): <why>``.
    """
    from mlserving.learning.location import parse_storage_options

    overrides = {k: v for k, v in vars(args).items() if k not in ("handler", "command")}
    for listed, name in _JOINED.items():
        values = overrides.pop(listed, None)
        if values:
            overrides[name] = ",".join(values)
    for listed, name in _STORAGE_OPTIONS.items():
        pairs = overrides.pop(listed, None)
        if not pairs:
            continue
        try:
            overrides[name] = parse_storage_options(pairs)
        except ValueError as exc:
            print(f"mlserving {command}: {_flag(listed)}: {exc}", file=sys.stderr)
            return None
    try:
        return ServerSettings(**overrides)
    except SettingsError as exc:
        for name, msg in exc.problems:
            where = f"{_flag(name)} ({ENV_PREFIX}{name.upper()}): " if name else ""
            print(f"mlserving {command}: {where}{msg}", file=sys.stderr)
        return None


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


__all__ = ["ENV_PREFIX", "ModelSettingsMixin", "ServerSettings", "SettingsError", "settings_from_flags"]
