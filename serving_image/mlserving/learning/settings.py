"""Configuration of the learner: ``mlserving learn`` flags and ``MLLEARNER_*`` environment variables.

Flags win over the environment. Durations are seconds (the operator converts
``spec.learning.feedback.maxDelay`` with the API's duration grammar).
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from mlserving.settings import ModelSettingsMixin


class LearnerSettings(ModelSettingsMixin, BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MLLEARNER_", extra="ignore", protected_namespaces=())

    model_name: str = Field(min_length=1, description="Model name in URLs (/v2/models/<name>/feedback).")
    model_uri: str = Field(
        min_length=1, description="The initial model (skops): file://, path, http(s)://, s3://."
    )
    storage_uri: str = Field(min_length=1, description="file:// or s3:// URI of the data log and snapshots.")
    signing_key_file: str = Field(min_length=1, description="File holding the snapshot signing key.")
    algorithm: str | None = Field(default=None, description="Expected estimator class, e.g. SGDClassifier.")
    estimator_params: dict[str, Any] = Field(
        default_factory=dict,
        description="Parameters set on the initial model before it learns (JSON object).",
    )
    snapshot_every: int = Field(default=1000, ge=1, description="Learned samples between snapshots.")
    batch_size: int = Field(default=32, ge=1, le=100_000, description="Samples per partial_fit call.")
    window: int = Field(default=500, ge=1, description="Samples the prequential metrics cover.")
    max_delay: float = Field(default=3600.0, description="Feedback older than this is not joined.")
    max_waiting_requests: int = Field(default=100_000, ge=1, description="Logged requests kept for feedback.")
    label_field: str = Field(
        default="label", min_length=1, description="Key of the label in a feedback body."
    )
    host: str = "0.0.0.0"
    port: int = Field(default=8080, ge=0, le=65535)
    model: str = Field(default="", description="`model` label of the metrics; defaults to model_name.")
    storage_options: dict[str, str] = Field(default_factory=dict, description="AWS_* options of the storage.")
    s3_endpoint_url: str | None = Field(default=None, description="S3 endpoint (MinIO, moto); else AWS.")
    allow_unsafe_pickle: bool = False
    trusted_types: str = Field(default="", description="Comma-separated extra types trusted in skops files.")
    flush_interval: float = Field(
        default=0.1,
        gt=0,
        description="Shortest time between two commits of the data log, unless flush_rows wait.",
    )
    flush_rows: int = Field(default=4096, ge=1, description="Rows that trigger a commit at once.")
    ack_timeout: float = Field(default=10.0, gt=0, description="Longest wait for a row to be written.")
    unknown_id_wait: float = Field(default=1.0, ge=0, description="Wait for the log of an unknown id.")
    max_unwritten_rows: int = Field(
        default=100_000, ge=1, description="Rows queued before feedback gets 503."
    )
    max_body_bytes: int = Field(default=16 * 1024 * 1024, gt=0, description="Larger bodies get 413.")
    download_dir: str | None = None
    keep_snapshots: int | None = Field(
        default=None,
        ge=1,
        description="Snapshots kept in storage (the newest, and the pinned, served and lineage roots).",
    )
    hold_serving: bool = Field(
        default=False,
        description="Serving moves only with a pin (promotion Canary), never to a new snapshot by itself.",
    )
    log_level: str = "INFO"

    @field_validator("estimator_params", mode="before")
    @classmethod
    def _json_object(cls, value: object) -> object:
        if isinstance(value, str):
            try:
                value = json.loads(value) if value.strip() else {}
            except ValueError as exc:
                raise ValueError(f"not a JSON object: {exc}") from None
        return value

    @field_validator("max_delay")
    @classmethod
    def _positive(cls, value: float) -> float:
        if value <= 0:
            raise ValueError(f"{value!r}: must be a positive number of seconds")
        return value

    @property
    def all_storage_options(self) -> dict[str, str]:
        return self.with_s3_endpoint(self.storage_options)
