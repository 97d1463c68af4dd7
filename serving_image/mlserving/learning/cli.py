"""``mlserving learn``: run the online learner (flags override ``MLLEARNER_*`` environment variables).

    mlserving learn --model-name N --model-uri U --storage-uri S --signing-key-file F \\
        [--snapshot-every K] [--batch-size B] [--window W] [--max-delay SECONDS] [--port P] ...

Also runnable as ``python -m mlserving.learning ...`` (the same flags, without ``learn``).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from mlserving.cli_flags import Flag, add_flags, configure_logging, repeatable, settings_from_flags, switch

_FLAGS: list[Flag] = [
    ("--model-name", "model_name", {"help": "model name in URLs (env MLLEARNER_MODEL_NAME)"}),
    (
        "--model-uri",
        "model_uri",
        {"help": "the initial model, a skops file: file://, path, http(s)://, s3://"},
    ),
    ("--storage-uri", "storage_uri", {"help": "file:// or s3:// URI of the data log and the snapshots"}),
    (
        "--signing-key-file",
        "signing_key_file",
        {"help": "file holding the snapshot signing key (>= 16 bytes)"},
    ),
    ("--algorithm", "algorithm", {"help": "expected estimator class (refused when the model is another)"}),
    (
        "--estimator-params",
        "estimator_params",
        {"help": 'JSON object of parameters set on the initial model, e.g. {"eta0": 0.01}'},
    ),
    ("--snapshot-every", "snapshot_every", {"type": int, "help": "learned samples between snapshots (1000)"}),
    ("--keep-snapshots", "keep_snapshots", {"type": int, "help": "snapshots kept in storage (all)"}),
    ("--batch-size", "batch_size", {"type": int, "help": "samples per partial_fit call (32)"}),
    ("--window", "window", {"type": int, "help": "samples the prequential metrics cover (500)"}),
    (
        "--max-delay",
        "max_delay",
        {"help": "seconds after its request beyond which feedback is not joined (3600)"},
    ),
    (
        "--max-waiting-requests",
        "max_waiting_requests",
        {"type": int, "help": "logged requests kept (100000)"},
    ),
    ("--label-field", "label_field", {"help": "key of the label in a feedback body (label)"}),
    ("--host", "host", {"help": "listen address (0.0.0.0)"}),
    ("--port", "port", {"type": int, "help": "listen port (8080)"}),
    ("--metric-model", "model", {"help": "`model` label of the metrics (default: the model name)"}),
    ("--s3-endpoint-url", "s3_endpoint_url", {"help": "S3 endpoint URL (MinIO, moto, ...)"}),
    (
        "--flush-interval",
        "flush_interval",
        {"type": float, "help": "shortest time between two data log commits (0.1)"},
    ),
    ("--flush-rows", "flush_rows", {"type": int, "help": "rows that trigger a commit at once (4096)"}),
    ("--ack-timeout", "ack_timeout", {"type": float, "help": "longest wait for a row to be written (10)"}),
    ("--unknown-id-wait", "unknown_id_wait", {"type": float, "help": "wait for an id's log to arrive (1)"}),
    ("--max-unwritten-rows", "max_unwritten_rows", {"type": int, "help": "rows queued before 503 (100000)"}),
    ("--max-body-bytes", "max_body_bytes", {"type": int, "help": "larger request bodies get 413"}),
    ("--download-dir", "download_dir", {"help": "where a remote initial model is downloaded"}),
    ("--log-level", "log_level", {"help": "log level (INFO)"}),
    repeatable("--storage-option", "KEY=VALUE storage option (repeatable), e.g. AWS_REGION=eu-west-1"),
    repeatable("--trust-type", "trust this type when loading the initial skops model (repeatable)"),
    switch(
        "--allow-unsafe-pickle", "load a joblib/pickle initial model (it can run arbitrary code when loaded)"
    ),
    switch("--hold-serving", "serving moves only with a pin (promotion Canary), never by a new snapshot"),
]


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "learn",
        help="learn a model online from production feedback; publish signed snapshots",
        description="The online learner. Every flag can also be set as MLLEARNER_<NAME>.",
        argument_default=argparse.SUPPRESS,
    )
    add_arguments(parser)
    parser.set_defaults(handler=run)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_flags(parser, _FLAGS)


def settings_from(args: argparse.Namespace) -> Any:
    """LearnerSettings from parsed flags; SystemExit(2) with one line per bad flag."""
    from mlserving.learning.settings import LearnerSettings

    settings = settings_from_flags("learn", LearnerSettings, args)
    if settings is None:
        raise SystemExit(2)
    return settings


def _fail(message: str) -> None:
    print(f"mlserving learn: {message}", file=sys.stderr)
    raise SystemExit(2)


def build_pipeline(settings: Any) -> Any:
    """Load the key and the initial model, and assemble the pipeline; SystemExit(2) when refused."""
    from dataclasses import fields

    from mlserving.learning.learner import LearnerError, check_learnable, load_initial_model, set_params
    from mlserving.learning.location import StorageError, StorageLocation
    from mlserving.learning.manifest import SnapshotError, read_key_file
    from mlserving.learning.pipeline import LearningPipeline, PipelineConfig
    from mlserving.runtimes import ModelLoadError, resolve_model_file
    from mlserving.storage import FetchError, fetch_model, file_sha256

    try:
        key = read_key_file(settings.signing_key_file)
        location = StorageLocation(settings.storage_uri, settings.all_storage_options)
        path = fetch_model(
            settings.model_uri, download_dir=settings.download_dir, s3_endpoint_url=settings.s3_endpoint_url
        )
        model_file = resolve_model_file(path)
        estimator = load_initial_model(
            model_file,
            allow_unsafe_pickle=settings.allow_unsafe_pickle,
            trusted_types=settings.trusted_type_list,
        )
        set_params(estimator, settings.estimator_params)
        check_learnable(estimator, settings.algorithm)
    except (SnapshotError, StorageError, FetchError, ModelLoadError, LearnerError) as exc:
        _fail(str(exc))
    # The pipeline takes the learner's settings of the same names as they are.
    given = {f.name: getattr(settings, f.name) for f in fields(PipelineConfig) if hasattr(settings, f.name)}
    base = lineage_id(file_sha256(model_file), settings.estimator_params)
    config = PipelineConfig(**given, base_sha256=base)
    return LearningPipeline(config, initial_estimator=estimator, location=location, key=key)


def lineage_id(model_sha256: str, params: dict[str, Any]) -> str:
    """What a snapshot lineage starts from: the initial model file and the parameters set on it (so
    a change of either starts a new lineage instead of resuming a model learned under the old)."""
    import hashlib
    import json

    if not params:
        return model_sha256
    canonical = json.dumps(params, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(f"{model_sha256}\n{canonical}".encode()).hexdigest()


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from mlserving.learning.service import create_app

    settings = settings_from(args)
    configure_logging(settings.log_level)
    pipeline = build_pipeline(settings)
    app = create_app(pipeline, max_body_bytes=settings.max_body_bytes)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        lifespan="on",
        access_log=False,
        log_config=None,
        server_header=False,
        timeout_graceful_shutdown=10,
    )
    uvicorn.Server(config).run()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="mlserving learn", description=__doc__.splitlines()[0], argument_default=argparse.SUPPRESS
    )
    add_arguments(parser)
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    return run(args)
