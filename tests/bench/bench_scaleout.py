"""Benchmark: scale-out of a scikit-learn model from 1 to 5 replicas, without and with a shared
compile cache.

    .venv/bin/python tests/bench/bench_scaleout.py [--replicas 5] [--model rf|lr] [--one-at-a-time]

Each replica is what one serving pod runs, as real processes on this machine:

- ``cold``: ``mlserving serve`` alone; every replica compiles the skops model to ONNX at load.
- ``cache``: what ``spec.model.compileCache`` does: the revision's compile Job runs ``mlserving
  compile --best-effort`` once into a cache directory (the PersistentVolumeClaim), then every
  replica runs ``mlserving serve --compile-cache-dir`` and finds the compiled model.

Replica 1 starts alone (a new revision); replicas 2..N then start together (scale-out), or one after
the other with ``--one-at-a-time`` (as on a cluster where each pod has its own cores). Printed per
replica: the server's seconds from its start to a 200 on ``/v2/health/ready`` (the pod's start to
ready), and the server's RSS once ready and after 200 requests; the compile Job's seconds are
printed once, on their own line (they come before the revision's first pod). The model is
bench_serving's random forest (100 trees, depth 8, 20 features).

The machine may be shared: numbers measured while other work runs are noisy; replicas starting
together share its cores.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_serving import free_port, http_ready, request_body, train, tree_rss_mb

from support.models import TREE_TYPE


@dataclass
class Replica:
    scenario: str
    index: int
    serve_s: float = 0.0
    rss_ready_mb: float = 0.0
    rss_loaded_mb: float = 0.0
    compiled: str = ""  # how the server got its model
    proc: subprocess.Popen[bytes] | None = None


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def model_args(model_file: Path, cache: Path | None) -> list[str]:
    args = ["--model-name", "m", "--model-uri", str(model_file), "--trust-type", TREE_TYPE]
    return [*args, "--compile-cache-dir", str(cache)] if cache else args


MLSERVING = [sys.executable, "-m", "mlserving.cli"]


def compile_job(model_file: Path, cache: Path) -> tuple[float, str]:
    """The revision's compile Job: seconds and what it said."""
    started = time.perf_counter()
    job = subprocess.run(
        [*MLSERVING, "compile", "--best-effort", *model_args(model_file, cache)],
        capture_output=True,
        text=True,
        check=True,
    )
    said = job.stderr.strip().splitlines()[-1].split(": ", 2)[-1] if job.stderr else ""
    return time.perf_counter() - started, said


def start_replica(replica: Replica, model_file: Path, cache: Path | None, work: Path) -> Replica:
    mlserving = MLSERVING
    log_dir = work / replica.scenario
    log_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    argv = [*mlserving, "serve", *model_args(model_file, cache), "--host", "127.0.0.1", "--port", str(port)]
    log_path = log_dir / f"replica-{replica.index}.log"
    started = time.perf_counter()
    with open(log_path, "wb") as log_file:
        replica.proc = subprocess.Popen(
            argv, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True
        )
    url = f"http://127.0.0.1:{port}"
    while not http_ready(f"{url}/v2/health/ready"):
        if replica.proc.poll() is not None:
            raise RuntimeError(
                f"replica {replica.index} exited with {replica.proc.returncode}; see {log_path}"
            )
        if time.perf_counter() - started > 180:
            raise RuntimeError(f"replica {replica.index} not ready after 180 s; see {log_path}")
        time.sleep(0.01)
    replica.serve_s = time.perf_counter() - started
    time.sleep(0.3)
    replica.rss_ready_mb = tree_rss_mb(replica.proc.pid)
    body = request_body("input", 1).encode()
    for _ in range(200):
        request = urllib.request.Request(
            f"{url}/v2/models/m/infer", data=body, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=30) as resp:
            resp.read()
    replica.rss_loaded_mb = tree_rss_mb(replica.proc.pid)
    server_log = log_path.read_text(errors="replace")
    if cache is None:
        replica.compiled = "compiled at load"
    elif "taken from the cache" in server_log:
        replica.compiled = "cache hit"
    else:
        replica.compiled = "compiled at load (cache miss)"
    return replica


def stop(replicas: list[Replica]) -> None:
    for replica in replicas:
        if replica.proc is not None and replica.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(replica.proc.pid, signal.SIGTERM)
    for replica in replicas:
        if replica.proc is not None:
            try:
                replica.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(replica.proc.pid, signal.SIGKILL)
                replica.proc.wait()


def scale_out(
    scenario: str, model_file: Path, cache: Path | None, work: Path, count: int, together: bool = True
) -> list[Replica]:
    """Replica 1 alone, then replicas 2..count together (or one at a time); all stopped before returning."""
    replicas = [Replica(scenario, i + 1) for i in range(count)]
    try:
        start_replica(replicas[0], model_file, cache, work)
        log(f"  {scenario}: replica 1 ready after {replicas[0].serve_s:.2f} s")
        with ThreadPoolExecutor(max_workers=max(1, count - 1) if together else 1) as pool:
            list(pool.map(lambda r: start_replica(r, model_file, cache, work), replicas[1:]))
        log(f"  {scenario}: replicas 2..{count} ready")
    finally:
        stop(replicas)
    return replicas


def print_table(rows: list[Replica], together: bool, job_s: float, job_said: str) -> None:
    print(
        f"{'scenario':8s} {'replica':>7s} {'start->ready s':>15s} "
        f"{'RSS ready MB':>13s} {'RSS +200 req MB':>16s}  how the model was loaded"
    )
    for r in rows:
        print(
            f"{r.scenario:8s} {r.index:7d} {r.serve_s:15.2f} "
            f"{r.rss_ready_mb:13.0f} {r.rss_loaded_mb:16.0f}  {r.compiled}"
        )
    print(
        f"\ncache: the compile Job ran once before replica 1: {job_s:.2f} s ({job_said})."
        f"\n{os.cpu_count()} CPUs; replica 1 starts alone, the others {'together' if together else 'one at a time'}; "
        "start->ready: `mlserving serve` start to a 200 on /v2/health/ready."
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--replicas", type=int, default=5)
    parser.add_argument("--model", choices=["rf", "lr"], default="rf")
    parser.add_argument(
        "--one-at-a-time", action="store_true", help="start replicas 2..N one after the other"
    )
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-scaleout-"))
    try:
        log("training models ...")
        model_file = train(work / "models")[args.model]["skops"]
        together = not args.one_at_a_time
        rows = scale_out("cold", model_file, None, work, args.replicas, together)
        cache = work / "compile-cache"
        job_s, job_said = compile_job(model_file, cache)
        log(f"  cache: compile Job done in {job_s:.2f} s")
        rows += scale_out("cache", model_file, cache, work, args.replicas, together)
        print_table(rows, together, job_s, job_said)
        if args.json:
            keep = ("scenario", "index", "serve_s", "rss_ready_mb", "rss_loaded_mb", "compiled")
            args.json.write_text(json.dumps([{k: getattr(r, k) for k in keep} for r in rows], indent=2))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
