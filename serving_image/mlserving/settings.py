"""Configuration of the model server: command-line flags and ``MLSERVING_*`` environment variables.

Every field can be set through the environment (``MLSERVING_<FIELD>``, e.g. ``MLSERVING_MODEL_URI``);
flags given to ``mlserving serve`` win over the environment. ``MLSERVING_MODEL`` and
``MLSERVING_REVISION`` are the ``model`` and ``revision`` labels of every metric, so that Prometheus
queries do not depend on scrape relabelling.

Online learning is off unless configured: ``learner_url`` logs every served request to the learner
and forwards labelled feedback to it; ``snapshot_uri`` with ``snapshot_key_file`` hot-loads the
learner's signed snapshots.
"""

from __future__ import annotations

from typing import Literal, Protocol
from urllib.parse import urlparse

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


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


class ServerSettings(ModelSettingsMixin, BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MLSERVING_", extra="ignore", protected_namespaces=())

    model_name: str = Field(min_length=1, description="Name of the model in URLs (/v2/models/<name>).")
    model_uri: str = Field(min_length=1, description="file://, plain path, http(s):// or s3:// URI.")
    format: Literal["auto", "onnx", "sklearn"] = "auto"
    model_version: str = Field(default="1", min_length=1, description="Version reported in responses.")
    host: str = "0.0.0.0"
    port: int = Field(default=8080, ge=0, le=65535)

    # Metric labels (from the pod's environment).
    model: str = Field(default="", description="`model` label of the metrics; defaults to model_name.")
    revision: str = Field(default="", description="`revision` label of the metrics.")

    # Model fetching.
    model_sha256: str | None = Field(default=None, description="Expected sha256 of the fetched model file.")
    max_model_bytes: int = Field(default=2 * 1024**3, gt=0, description="Largest model file to download.")
    download_dir: str | None = Field(default=None, description="Where remote models are downloaded.")
    s3_endpoint_url: str | None = Field(default=None, description="S3 endpoint (e.g. MinIO); else AWS.")
    fetch_timeout_seconds: float = Field(default=60.0, gt=0)
    fetch_deadline_seconds: float = Field(default=3600.0, gt=0)

    # scikit-learn loading and compilation.
    allow_unsafe_pickle: bool = Field(
        default=False, description="Load joblib/pickle files (they can run arbitrary code when loaded)."
    )
    trusted_types: str = Field(
        default="",
        description="Comma-separated extra types trusted when loading skops files, e.g. sklearn.tree._tree.Tree.",
    )
    compile: Literal["auto", "onnx", "native"] = Field(
        default="auto",
        description="auto: compile scikit-learn models to ONNX when outputs match, else serve natively.",
    )
    compile_tolerance: float = Field(default=1e-4, gt=0, description="Max abs difference on the probe batch.")
    compile_cache_dir: str | None = Field(
        default=None, description="Cache of compiled models keyed by the model file's sha256."
    )

    # Execution.
    intra_op_threads: int = Field(default=1, ge=0, description="onnxruntime intra-op threads (0: all cores).")
    inter_op_threads: int = Field(default=1, ge=0, description="onnxruntime inter-op threads.")
    max_batch_size: int = Field(
        default=64, ge=1, description="Adaptive batching: largest merged batch (1: off)."
    )
    max_batch_wait_ms: float = Field(
        default=0.0, ge=0, description="Extra wait to fill a batch; 0 merges only requests already queued."
    )

    # Limits and protocol.
    max_body_bytes: int = Field(default=16 * 1024 * 1024, gt=0, description="Larger bodies get 413.")
    max_tensor_elements: int = Field(
        default=4_000_000, gt=0, description="Largest tensor a request may declare."
    )
    allow_nan: bool = Field(default=False, description="Accept NaN/Inf in floating-point inputs.")
    id_key: str | None = Field(
        default=None, description="HMAC key signing generated response ids (shared by replicas)."
    )
    id_cache_size: int = Field(
        default=100_000, ge=1, description="Recent response ids remembered for feedback."
    )
    shutdown_timeout_seconds: float = Field(default=20.0, ge=0, description="Drain deadline on SIGTERM.")
    log_level: str = "INFO"

    # Online learning: request logging and feedback forwarding to the learner.
    learner_url: str | None = Field(
        default=None,
        description="Base URL of the learner, e.g. http://mymodel-learner:8080 (off when unset).",
    )
    learning_log_queue: int = Field(
        default=50_000, ge=1, description="Logged requests held while the learner is slow; more are dropped."
    )
    learning_log_batch: int = Field(default=512, ge=1, description="Logged requests per POST to the learner.")
    learning_log_flush_seconds: float = Field(
        default=0.05, gt=0, description="Longest time a logged request waits before it is sent."
    )
    learner_timeout_seconds: float = Field(
        default=15.0,
        gt=0,
        description="Longest wait for the learner (feedback is answered once it is written).",
    )

    # Online learning: hot-loading of signed snapshots.
    snapshot_uri: str | None = Field(
        default=None, description="file:// or s3:// storage URI the learner publishes snapshots under."
    )
    snapshot_key_file: str | None = Field(
        default=None, description="File holding the key that signs snapshots (a mounted Secret)."
    )
    pinned_snapshot: int | None = Field(
        default=None, ge=0, description="Serve this snapshot instead of the latest one."
    )
    snapshot_pointer: Literal["serving", "candidate"] = Field(
        default="serving",
        description="Snapshot pointer followed: serving, or candidate (a snapshot canary's replicas).",
    )
    snapshot_poll_seconds: float = Field(
        default=0.5, gt=0, description="Interval between two reads of the latest snapshot pointer."
    )
    snapshot_storage_options: dict[str, str] = Field(
        default_factory=dict, description="AWS_* options of the snapshot storage (endpoint, region, keys)."
    )

    @field_validator("model_sha256")
    @classmethod
    def _sha256_hex(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        value = value.strip().lower()
        if len(value) != 64 or any(c not in "0123456789abcdef" for c in value):
            raise ValueError("model_sha256 must be 64 hexadecimal characters")
        return value

    @field_validator("learner_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        parsed = urlparse(value)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ValueError(f"learner_url {value!r} must be an http:// or https:// URL")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _snapshot_settings_together(self) -> ServerSettings:
        if not self.snapshot_uri:
            self.snapshot_uri = None
            if self.pinned_snapshot is not None:
                raise ValueError("pinned_snapshot needs snapshot_uri (where the snapshots are)")
            return self
        if not self.snapshot_key_file:
            raise ValueError(
                "snapshot_key_file is required with snapshot_uri: unsigned snapshots are refused"
            )
        return self

    @property
    def learning_storage_options(self) -> dict[str, str]:
        """The snapshot storage options, with the server's S3 endpoint unless one is given."""
        return self.with_s3_endpoint(self.snapshot_storage_options)
