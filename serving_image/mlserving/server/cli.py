"""``mlserving serve``: run the model server (flags override ``MLSERVING_*`` environment variables)."""

from __future__ import annotations

import argparse
from typing import Any

from mlserving.cli_flags import Flag, add_flags, repeatable, switch

_FLAGS: list[Flag] = [
    ("--model-name", "model_name", {"help": "model name in URLs (env MLSERVING_MODEL_NAME)"}),
    ("--model-uri", "model_uri", {"help": "file://, path, http(s):// or s3:// (env MLSERVING_MODEL_URI)"}),
    ("--format", "format", {"choices": ["auto", "onnx", "sklearn"], "help": "model format (default auto)"}),
    ("--model-version", "model_version", {"help": "version reported in responses (default 1)"}),
    ("--host", "host", {"help": "listen address (default 0.0.0.0)"}),
    ("--port", "port", {"type": int, "help": "listen port (default 8080)"}),
    ("--revision", "revision", {"help": "revision label of the metrics (env MLSERVING_REVISION)"}),
    ("--model-sha256", "model_sha256", {"help": "expected sha256 of the model file"}),
    ("--max-model-bytes", "max_model_bytes", {"type": int, "help": "largest model download"}),
    ("--download-dir", "download_dir", {"help": "where remote models are downloaded"}),
    ("--s3-endpoint-url", "s3_endpoint_url", {"help": "S3 endpoint URL (MinIO, moto, ...)"}),
    (
        "--fetch-timeout",
        "fetch_timeout_seconds",
        {"type": float, "help": "longest wait for a model download's connection, answer or next bytes (60)"},
    ),
    (
        "--fetch-deadline",
        "fetch_deadline_seconds",
        {"type": float, "help": "longest a whole model download may take (3600)"},
    ),
    (
        "--compile",
        "compile",
        {"choices": ["auto", "onnx", "native"], "help": "scikit-learn to ONNX compilation"},
    ),
    (
        "--compile-tolerance",
        "compile_tolerance",
        {"type": float, "help": "max difference on the probe batch"},
    ),
    ("--compile-cache-dir", "compile_cache_dir", {"help": "cache compiled models here"}),
    (
        "--intra-op-threads",
        "intra_op_threads",
        {"type": int, "help": "onnxruntime intra-op threads (default 1)"},
    ),
    (
        "--inter-op-threads",
        "inter_op_threads",
        {"type": int, "help": "onnxruntime inter-op threads (default 1)"},
    ),
    ("--max-batch-size", "max_batch_size", {"type": int, "help": "adaptive batching: max rows (1: off)"}),
    (
        "--max-batch-wait-ms",
        "max_batch_wait_ms",
        {"type": float, "help": "adaptive batching: max wait (default 0)"},
    ),
    ("--max-body-bytes", "max_body_bytes", {"type": int, "help": "larger request bodies get 413"}),
    (
        "--max-tensor-elements",
        "max_tensor_elements",
        {"type": int, "help": "largest tensor a request may declare"},
    ),
    ("--id-cache-size", "id_cache_size", {"type": int, "help": "recent response ids kept for feedback"}),
    ("--shutdown-timeout", "shutdown_timeout_seconds", {"type": float, "help": "drain deadline on SIGTERM"}),
    ("--log-level", "log_level", {"help": "log level (default INFO)"}),
    # Online learning (off unless --learner-url / --snapshot-uri is given).
    ("--learner-url", "learner_url", {"help": "log requests to and forward labels to this learner"}),
    ("--learning-log-queue", "learning_log_queue", {"type": int, "help": "logged requests held (50000)"}),
    ("--learning-log-batch", "learning_log_batch", {"type": int, "help": "logged requests per POST (512)"}),
    (
        "--learning-log-flush-seconds",
        "learning_log_flush_seconds",
        {"type": float, "help": "longest wait of a logged request before it is sent (0.05)"},
    ),
    ("--learner-timeout", "learner_timeout_seconds", {"type": float, "help": "learner request timeout (15)"}),
    ("--snapshot-uri", "snapshot_uri", {"help": "hot-load signed snapshots from this file:// or s3:// URI"}),
    ("--snapshot-key-file", "snapshot_key_file", {"help": "file holding the snapshot signing key"}),
    ("--pinned-snapshot", "pinned_snapshot", {"type": int, "help": "serve this snapshot, not the latest"}),
    (
        "--snapshot-pointer",
        "snapshot_pointer",
        {"choices": ["serving", "candidate"], "help": "snapshot pointer to follow (serving)"},
    ),
    (
        "--snapshot-poll-interval",
        "snapshot_poll_seconds",
        {"type": float, "help": "seconds between reads of the latest snapshot (0.5)"},
    ),
    switch("--allow-unsafe-pickle", "load joblib/pickle files (they can run arbitrary code when loaded)"),
    switch("--allow-nan", "accept NaN/Inf in floating-point inputs"),
    repeatable(
        "--trust-type", "trust this type when loading skops files (repeatable), e.g. sklearn.tree._tree.Tree"
    ),
    repeatable(
        "--snapshot-storage-option",
        "KEY=VALUE option of the snapshot storage (repeatable), e.g. AWS_REGION=eu-west-1",
    ),
]


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="serve one model over the Open Inference Protocol (V2) and KServe V1",
        description="Serve one scikit-learn or ONNX model. Every flag can also be set as MLSERVING_<NAME>.",
        argument_default=argparse.SUPPRESS,
    )
    add_flags(parser, _FLAGS)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from mlserving.settings import settings_from_flags

    settings = settings_from_flags("serve", args)
    if settings is None:
        return 2
    serve(settings)
    return 0


def serve(settings: Any) -> None:
    from mlserving.http.run import run_uvicorn
    from mlserving.server import logs
    from mlserving.server.app import InferenceServer
    from mlserving.server.dataplane import DataPlane

    logs.configure(settings.log_level)
    protocol = _http_protocol()
    arrivals = None
    if not isinstance(protocol, str):
        from mlserving.http.transport import ARRIVALS

        arrivals = ARRIVALS
    run_uvicorn(
        InferenceServer(DataPlane(settings, arrivals=arrivals)),
        host=settings.host,
        port=settings.port,
        http=protocol,
        drain_seconds=settings.shutdown_timeout_seconds,
        backlog=2048,
        log_config=None,
        timeout_keep_alive=75,
        ws="none",  # no WebSocket endpoint: the websockets library stays out of the server's memory
    )


def _http_protocol() -> Any:
    import os

    if os.environ.get("MLSERVING_PLAIN_HTTPTOOLS"):
        return "httptools"
    from mlserving.http.transport import OneWriteHttpToolsProtocol

    return OneWriteHttpToolsProtocol
