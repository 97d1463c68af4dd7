"""``mlserving compile``: fill the compile cache before the server starts (a pod's init container).

It takes every flag of ``mlserving serve`` (so a pod gives both containers the same arguments and
they compute the same cache key) and requires ``--compile-cache-dir``. It fetches the model and,
unless the cache already holds it, compiles it into the cache once: replicas starting together on a
shared volume wait for the first one's lock and read its entry (``mlserving.runtimes.compile_once``).
The server started afterwards with the same ``--compile-cache-dir`` takes the compiled model from the
cache and is ready without compiling.

With ``--best-effort`` a model that cannot be fetched or loaded (a refused file, untrusted types) is
logged and the command exits 0: the server then tries the model itself and reports the refusal the
way the control plane reads it, instead of a pod stuck in its init step.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from mlserving.cli_flags import add_flags, configure_logging, switch

if TYPE_CHECKING:
    from mlserving.runtimes import LoadOptions
    from mlserving.settings import ServerSettings

log = logging.getLogger("mlserving.compile")


def load_options(s: ServerSettings) -> LoadOptions:
    """How the server loads its model; the compile command uses the same options (same cache key)."""
    from mlserving.runtimes import LoadOptions

    return LoadOptions(
        format=s.format,
        allow_unsafe_pickle=s.allow_unsafe_pickle,
        trusted_types=tuple(s.trusted_type_list),
        compile=s.compile,
        compile_tolerance=s.compile_tolerance,
        compile_cache_dir=s.compile_cache_dir,
        intra_op_threads=s.intra_op_threads,
        inter_op_threads=s.inter_op_threads,
    )


def fetch(s: ServerSettings) -> Path:
    from mlserving.storage import FetchError, fetch_model

    try:
        return fetch_model(
            s.model_uri,
            download_dir=s.download_dir,
            sha256=s.model_sha256,
            max_bytes=s.max_model_bytes,
            timeout=s.fetch_timeout_seconds,
            deadline=s.fetch_deadline_seconds,
            s3_endpoint_url=s.s3_endpoint_url,
        )
    except FetchError as exc:
        raise FetchError(f"fetch failed: {exc}") from None


def fill_compile_cache(s: ServerSettings) -> str:
    """Compile the model of ``s`` into its cache unless it is there; returns what happened."""
    from mlserving.runtimes import compile_once, detect_format, resolve_model_file
    from mlserving.runtimes.sklearn import check_pickle_allowed

    model_file = resolve_model_file(fetch(s))
    options = load_options(s)
    fmt = detect_format(model_file) if options.format == "auto" else options.format
    if fmt == "onnx":
        return f"{model_file.name} is an ONNX model: nothing to compile"
    if options.compile == "native":
        return "compilation disabled (--compile native): nothing to compile"
    check_pickle_allowed(model_file, options.allow_unsafe_pickle)
    started = time.perf_counter()
    outcome, hit = compile_once(model_file, options)
    if hit:
        what = "compiled model" if outcome.onnx_bytes is not None else "native fallback"
        return f"{model_file.name}: {what} already in the cache"
    elapsed = time.perf_counter() - started
    if outcome.onnx_bytes is None:
        return f"{model_file.name}: not compiled ({outcome.reason}); remembered in the cache ({elapsed:.1f}s)"
    return f"{model_file.name}: compiled {outcome.estimator or 'the model'} into the cache in {elapsed:.1f}s"


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from mlserving.server.cli import _FLAGS

    parser = subparsers.add_parser(
        "compile",
        help="compile a scikit-learn model into the compile cache (before `serve` starts)",
        description="Compile the model `mlserving serve` would load into --compile-cache-dir, once for "
        "every replica sharing the cache. Takes the flags of `mlserving serve`.",
        argument_default=argparse.SUPPRESS,
    )
    add_flags(parser, _FLAGS)
    add_flags(
        parser,
        [
            switch(
                "--best-effort", "exit 0 when the model cannot be fetched or loaded (the server reports it)"
            )
        ],
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from mlserving.settings import settings_from_flags

    best_effort = bool(vars(args).pop("best_effort", False))
    if "model_name" not in vars(args) and not os.environ.get("MLSERVING_MODEL_NAME"):
        args.model_name = "model"  # the name does not change the compilation
    settings = settings_from_flags("compile", args)
    if settings is None:
        return 2
    if not settings.compile_cache_dir:
        print(
            "mlserving compile: --compile-cache-dir (MLSERVING_COMPILE_CACHE_DIR) is required",
            file=sys.stderr,
        )
        return 2
    configure_logging(settings.log_level)
    try:
        log.info(fill_compile_cache(settings))
    except Exception as exc:  # a model problem; the server meets it again and reports it
        if best_effort:
            log.warning("not compiled, the server loads the model itself: %s: %s", type(exc).__name__, exc)
            return 0
        log.error("not compiled: %s: %s", type(exc).__name__, exc)
        return 1
    return 0
