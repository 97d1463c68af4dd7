"""Model runtimes behind one small interface (``load``, ``predict``, ``unload``, ``ready``).

``open_model`` picks the runtime for a local model file: ``.onnx`` files run on onnxruntime;
scikit-learn models (skops, or joblib/pickle when allowed) are compiled to ONNX when the compiled
model matches the native one on a probe batch, and are served natively otherwise.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from mlserving.runtimes.base import ModelLoadError, ModelRuntime, RuntimeInfo, TensorSpec

__all__ = [
    "LoadOptions",
    "LoadResult",
    "ModelLoadError",
    "ModelRuntime",
    "RuntimeInfo",
    "TensorSpec",
    "compile_once",
    "open_model",
]

log = logging.getLogger(__name__)

MODEL_FILE_NAMES = ("model.onnx", "model.skops", "model.joblib", "model.pkl", "model.pickle")


@dataclass(frozen=True)
class LoadOptions:
    format: Literal["auto", "onnx", "sklearn"] = "auto"
    allow_unsafe_pickle: bool = False
    trusted_types: Sequence[str] = ()
    compile: Literal["auto", "onnx", "native"] = "auto"
    compile_tolerance: float = 1e-4
    compile_cache_dir: str | None = None
    intra_op_threads: int = 1
    inter_op_threads: int = 1
    isolate_compile: bool = True
    compile_timeout_seconds: float = 300.0


@dataclass
class LoadResult:
    runtime: ModelRuntime
    path: Path
    native_fallback_reason: str | None = None
    compile_cache_hit: bool = False


def resolve_model_file(path: Path) -> Path:
    """A model directory holds one of MODEL_FILE_NAMES (or exactly one .onnx/.skops file)."""
    if path.is_file():
        return path
    if not path.is_dir():
        raise ModelLoadError(f"{path}: no such model file")
    for name in MODEL_FILE_NAMES:
        if (path / name).is_file():
            return path / name
    candidates = [p for p in path.iterdir() if p.suffix.lower() in (".onnx", ".skops", ".joblib", ".pkl")]
    if len(candidates) == 1:
        return candidates[0]
    raise ModelLoadError(
        f"{path}: directory has {len(candidates)} model files; expected one of {', '.join(MODEL_FILE_NAMES)}"
    )


def detect_format(path: Path) -> Literal["onnx", "sklearn"]:
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        return "onnx"
    if suffix in (".skops", ".joblib", ".pkl", ".pickle"):
        return "sklearn"
    with open(path, "rb") as fh:
        head = fh.read(4)
    if head.startswith(b"PK") or head[:1] == b"\x80":
        return "sklearn"
    if head[:1] == b"\x08":  # protobuf field 1 (ir_version), varint: an ONNX ModelProto
        return "onnx"
    raise ModelLoadError(f"{path.name}: cannot tell the model format; pass --format onnx|sklearn")


def open_model(
    path: Path,
    options: LoadOptions,
    on_fallback: Callable[[str], None] | None = None,
) -> LoadResult:
    """Load the model at ``path`` and return a ready runtime."""
    from mlserving.runtimes.onnx import OnnxRuntime

    model_file = resolve_model_file(path)
    fmt = detect_format(model_file) if options.format == "auto" else options.format
    threads = {"intra_op_threads": options.intra_op_threads, "inter_op_threads": options.inter_op_threads}
    if fmt == "onnx":
        runtime: ModelRuntime = OnnxRuntime(model_file, **threads)
        runtime.load()
        return LoadResult(runtime, model_file)

    from mlserving.runtimes.sklearn import SklearnRuntime, check_pickle_allowed

    check_pickle_allowed(model_file, options.allow_unsafe_pickle)
    reason: str | None = None
    estimator = None
    if options.compile == "native":
        reason = "compilation disabled (--compile native)"
    else:
        if options.compile_cache_dir:
            outcome, hit = compile_once(model_file, options)
        else:
            outcome, estimator = _compile(model_file, options)
            hit = False
        if outcome.onnx_bytes is not None:
            compiled = _compiled_runtime(outcome.onnx_bytes, outcome.task, model_file, options)
            compiled.load()
            if hit:
                log.info("compiled model %s taken from the cache", model_file.name)
            else:
                log.info("serving %s compiled to ONNX", outcome.estimator or model_file.name)
            return LoadResult(compiled, model_file, compile_cache_hit=hit)
        reason = outcome.reason
        if options.compile == "onnx":
            raise ModelLoadError(f"{model_file.name}: --compile onnx, but {reason}")
    if estimator is None:
        estimator = _load(model_file, options)
    log.warning(
        "serving %s natively (slower): %s",
        type(estimator).__name__,
        reason,
        extra={"native_fallback": reason},
    )
    if on_fallback is not None:
        on_fallback(reason or "")
    runtime = SklearnRuntime(estimator, fallback_reason=reason or "")
    runtime.load()
    return LoadResult(runtime, model_file, native_fallback_reason=reason)


def compile_once(model_file: Path, options: LoadOptions) -> tuple[CompileOutcome, bool]:
    """The compilation of ``model_file`` from ``options.compile_cache_dir``, or compiled into it.

    Replicas that share the cache (a volume) compile a model once: the first takes a lock file of the
    cache key and compiles, the others wait for the lock and read what it wrote. Entries are written to
    a temporary name and renamed, the metadata last, so a reader never sees half an entry even where
    the lock does not hold. A model that cannot be compiled is remembered too (with the reason), so
    later replicas go straight to native serving. Returns ``(outcome, taken from the cache)``.
    """
    cache_dir = options.compile_cache_dir
    if not cache_dir:
        raise ValueError("compile_once needs options.compile_cache_dir")
    key = _cache_key(model_file, options)
    cached = _cache_read(cache_dir, key)
    if cached is not None:
        return cached, True
    with _cache_lock(cache_dir, key):
        cached = _cache_read(cache_dir, key)  # compiled by another replica while we waited
        if cached is not None:
            return cached, True
        outcome, _ = _compile(model_file, options)
        _cache_write(cache_dir, key, outcome)
    return outcome, False


def _compile(model_file: Path, options: LoadOptions) -> tuple[CompileOutcome, object | None]:
    """Compile in a child process (or here, returning the loaded estimator for a native fallback)."""
    if options.isolate_compile:
        return _compile_in_subprocess(model_file, options), None
    estimator = _load(model_file, options)
    return compile_estimator(estimator, options), estimator


@dataclass
class CompileOutcome:
    onnx_bytes: bytes | None
    task: str = "classification"
    reason: str | None = None  # why the model is not compiled
    estimator: str = ""


def _load(model_file: Path, options: LoadOptions) -> object:
    from mlserving.runtimes.sklearn import load_estimator

    estimator = load_estimator(
        model_file, allow_unsafe_pickle=options.allow_unsafe_pickle, trusted_types=options.trusted_types
    )
    if not hasattr(estimator, "predict"):
        raise ModelLoadError(f"{model_file.name}: {type(estimator).__name__} has no predict method")
    return estimator


def compile_estimator(estimator: object, options: LoadOptions) -> CompileOutcome:
    """Convert to ONNX and check the result against the estimator on a probe batch."""
    from mlserving.runtimes.sklearn import compare_outputs, compile_to_onnx, n_features, probe_batch, task_of

    name = type(estimator).__name__
    try:
        onnx_bytes = compile_to_onnx(estimator)
        task = task_of(estimator)
        compiled = _compiled_runtime(onnx_bytes, task, Path(name), options)
        compiled.load()
        differs = compare_outputs(
            estimator, compiled, probe_batch(n_features(estimator)), options.compile_tolerance
        )
    except ModelLoadError:
        raise
    except Exception as exc:
        first_line = str(exc).splitlines()[0] if str(exc) else ""
        return CompileOutcome(
            None, reason=f"no ONNX conversion: {type(exc).__name__}: {first_line}", estimator=name
        )
    if differs is not None:
        return CompileOutcome(None, task=task, reason=f"compiled outputs differ: {differs}", estimator=name)
    return CompileOutcome(onnx_bytes, task=task, estimator=name)


def _compile_in_subprocess(model_file: Path, options: LoadOptions) -> CompileOutcome:
    """Load and compile in a child process: scikit-learn, skops and skl2onnx never enter the server's
    memory (it stays small), and parsing an untrusted file cannot corrupt the serving process."""
    import subprocess
    import sys
    import tempfile

    with tempfile.TemporaryDirectory(prefix="mlserving-compile-") as tmp:
        request = {
            "model_file": str(model_file),
            "allow_unsafe_pickle": options.allow_unsafe_pickle,
            "trusted_types": list(options.trusted_types),
            "compile_tolerance": options.compile_tolerance,
            "out_dir": tmp,
        }
        proc = subprocess.run(
            [sys.executable, "-m", "mlserving.runtimes.compile", json.dumps(request)],
            capture_output=True,
            text=True,
            timeout=options.compile_timeout_seconds,
            check=False,
        )
        result_path = Path(tmp) / "result.json"
        if proc.returncode != 0 or not result_path.exists():
            tail = (proc.stderr or "").strip().splitlines()[-3:]
            raise ModelLoadError(
                f"{model_file.name}: compiler process failed (exit {proc.returncode}): {' | '.join(tail)}"
            )
        result = json.loads(result_path.read_text())
        if result["status"] == "error":
            if result.get("untrusted_types"):
                from mlserving.runtimes.sklearn import UntrustedSkopsTypes

                raise UntrustedSkopsTypes(result["reason"], result["untrusted_types"])
            raise ModelLoadError(result["reason"])
        onnx_path = Path(tmp) / "model.onnx"
        onnx_bytes = onnx_path.read_bytes() if result["status"] == "compiled" else None
        return CompileOutcome(
            onnx_bytes,
            result.get("task", "classification"),
            result.get("reason"),
            result.get("estimator", ""),
        )


def _compiled_runtime(onnx_bytes: bytes, task: str, model_file: Path, options: LoadOptions) -> ModelRuntime:
    from mlserving.runtimes.onnx import OnnxRuntime

    return OnnxRuntime(
        onnx_bytes,
        intra_op_threads=options.intra_op_threads,
        inter_op_threads=options.inter_op_threads,
        task="classification" if task == "classification" else "regression",
        rename={"variable": "value"},
        squeeze=("value",),
        platform="sklearn_onnx",
        properties={"compiled_from": model_file.name},
    )


def _versions() -> str:
    from importlib.metadata import PackageNotFoundError, version

    parts = []
    for dist in ("scikit-learn", "skl2onnx", "onnxruntime", "skops"):
        try:
            parts.append(f"{dist}={version(dist)}")
        except PackageNotFoundError:
            parts.append(f"{dist}=none")
    return ";".join(parts)


def _cache_key(model_file: Path, options: LoadOptions) -> str:
    from mlserving.storage import file_sha256

    material = json.dumps(
        {
            "sha256": file_sha256(model_file),
            "versions": _versions(),
            "pickle": options.allow_unsafe_pickle,
            "trusted": sorted(options.trusted_types),
            "tolerance": options.compile_tolerance,
        },
        sort_keys=True,
    )
    return hashlib.sha256(material.encode()).hexdigest()[:32]


def _cache_read(cache_dir: str, key: str) -> CompileOutcome | None:
    base = Path(cache_dir)
    try:
        meta = json.loads((base / f"{key}.json").read_text())
        if meta.get("status") == "fallback":
            return CompileOutcome(
                None, str(meta.get("task", "classification")), str(meta.get("reason") or "")
            )
        data = (base / f"{key}.onnx").read_bytes()
    except (OSError, ValueError, AttributeError):
        return None
    if hashlib.sha256(data).hexdigest() != meta.get("onnx_sha256"):
        log.warning("ignoring corrupt compile cache entry %s", key)
        return None
    return CompileOutcome(
        data, str(meta.get("task", "classification")), estimator=str(meta.get("estimator", ""))
    )


def _cache_write(cache_dir: str, key: str, outcome: CompileOutcome) -> None:
    base = Path(cache_dir)
    meta: dict[str, str] = {"task": outcome.task, "estimator": outcome.estimator}
    try:
        base.mkdir(parents=True, exist_ok=True)
        if outcome.onnx_bytes is None:
            meta.update(status="fallback", reason=outcome.reason or "")
        else:
            meta.update(status="compiled", onnx_sha256=hashlib.sha256(outcome.onnx_bytes).hexdigest())
            _write_atomically(base / f"{key}.onnx", outcome.onnx_bytes)
        _write_atomically(base / f"{key}.json", json.dumps(meta).encode())  # last: it commits the entry
    except OSError as exc:
        log.warning("cannot write the compile cache in %s: %s", cache_dir, exc)


def _write_atomically(target: Path, data: bytes) -> None:
    """Write under a unique temporary name, then rename: replicas of other pods (each possibly PID 1)
    writing the same entry never mix their bytes."""
    import tempfile

    descriptor, staged = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
        os.chmod(staged, 0o644)
        os.replace(staged, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(staged)
        raise


@contextlib.contextmanager
def _cache_lock(cache_dir: str, key: str) -> Iterator[None]:
    """An exclusive lock on ``<cache_dir>/.<key>.lock`` while a replica compiles. The kernel releases
    it when the holder dies. Where the cache cannot hold a lock file (read-only, no locking), the
    replica compiles unlocked: the atomic writes keep concurrent compilations safe, only not single."""
    import fcntl

    try:
        Path(cache_dir).mkdir(parents=True, exist_ok=True)
        handle = open(Path(cache_dir) / f".{key}.lock", "a+b")  # noqa: SIM115 (closed below)
    except OSError as exc:
        log.warning("compiling without the cache lock in %s: %s", cache_dir, exc)
        yield
        return
    try:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        except OSError as exc:
            log.warning("compiling without the cache lock in %s: %s", cache_dir, exc)
        yield
    finally:
        handle.close()  # closing releases the lock
