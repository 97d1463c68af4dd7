"""Benchmark: mlserving vs. MLServer vs. KServe on the same scikit-learn models, one worker each.

    .venv/bin/python tests/bench/bench_serving.py [--duration 8] [--only mlserving] [--models rf,lr]

Models: a RandomForestClassifier (100 trees, depth 8, 20 features) and a LogisticRegression
(20 features), trained here. mlserving serves the skops file (compiled to ONNX at load); MLServer
(``mlserver`` + ``mlserver-sklearn`` 1.7.1) and KServe (``kserve``, with a minimal ``kserve.Model``
doing what KServe's sklearnserver does: ``predict_proba`` on the V2 input) serve the joblib file.
Each competitor lives in its own virtual environment under ``.venv/bench/``, created on first use.

Load generator: ``wrk`` (one thread, keep-alive connections) posting the same single-row V2 request
(FP64, 20 features) at concurrency 1, 8 and 32; then 64-row batches at concurrency 8. Printed per
server: req/s, p50, p99 (wrk's latency distribution), non-2xx answers, RSS of the server's whole
process tree after the load, and time from process start to a 200 on ``/v2/health/ready``.
mlserving's time-to-ready is given cold (first start: compile) and warm (compile cache hit).

The machine may be shared: numbers measured while other work runs are noisy.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))

from support import free_port  # noqa: E402
from support.models import TREE_TYPE  # noqa: E402

BENCH_VENVS = ROOT / ".venv" / "bench"
BASE_PYTHON = Path(sys.base_prefix) / "bin" / "python3"
FEATURES = 20
CONCURRENCY = (1, 8, 32)

KSERVE_MODEL = '''
"""A minimal kserve.Model doing what KServe's sklearnserver does (joblib model, predict_proba)."""
import argparse

import joblib
from kserve import Model, ModelServer, model_server
from kserve.utils.utils import get_predict_input, get_predict_response


class SKLearnModel(Model):
    def __init__(self, name, path):
        super().__init__(name)
        self.path = path
        self.ready = False

    def load(self):
        self._model = joblib.load(self.path)
        self.ready = True
        return self.ready

    def predict(self, payload, headers=None, response_headers=None):
        instances = get_predict_input(payload)
        result = self._model.predict_proba(instances)
        return get_predict_response(payload, result, self.name)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(parents=[model_server.parser])
    parser.add_argument("--model_path", required=True)
    args, _ = parser.parse_known_args()
    model = SKLearnModel(args.model_name, args.model_path)
    model.load()
    ModelServer(http_port=args.http_port, grpc_port=args.grpc_port, workers=1, enable_grpc=False).start([model])
'''


@dataclass
class Load:
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int


@dataclass
class Result:
    server: str
    model: str
    ready_s: float
    rss_mb: float = 0.0
    loads: dict[int, Load] = field(default_factory=dict)
    batch_rows_per_s: float = 0.0
    note: str = ""


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- environments


def ensure_venv(name: str, packages: list[str]) -> Path:
    venv = BENCH_VENVS / name
    python = venv / "bin" / "python"
    stamp = venv / ".installed"
    if stamp.exists() and stamp.read_text() == " ".join(packages):
        return python
    log(f"creating {venv} with {' '.join(packages)} (first run only)")
    if not python.exists():
        subprocess.run([str(BASE_PYTHON), "-m", "venv", str(venv)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", *packages], check=True)
    stamp.write_text(" ".join(packages))
    return python


def sklearn_version() -> str:
    import sklearn

    return sklearn.__version__


# --------------------------------------------------------------------------- models and requests


def train(directory: Path) -> dict[str, dict[str, Path]]:
    import joblib
    import skops.io as sio
    from sklearn.datasets import make_classification
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression

    x, y = make_classification(n_samples=4000, n_features=FEATURES, n_informative=10, random_state=0)
    models = {
        "rf": RandomForestClassifier(n_estimators=100, max_depth=8, random_state=0).fit(x, y),
        "lr": LogisticRegression(max_iter=1000).fit(x, y),
    }
    paths: dict[str, dict[str, Path]] = {}
    for name, model in models.items():
        folder = directory / name
        folder.mkdir(parents=True, exist_ok=True)
        sio.dump(model, folder / "model.skops")
        joblib.dump(model, folder / "model.joblib")
        paths[name] = {"skops": folder / "model.skops", "joblib": folder / "model.joblib", "dir": folder}
    return paths


def request_body(input_name: str, rows: int, outputs: list[str] | None = None) -> str:
    import numpy as np

    data = np.random.default_rng(1).normal(size=(rows, FEATURES)).round(4)
    body: dict[str, object] = {
        "inputs": [
            {"name": input_name, "shape": [rows, FEATURES], "datatype": "FP64", "data": data.ravel().tolist()}
        ]
    }
    if outputs:
        body["outputs"] = [{"name": o} for o in outputs]
    return json.dumps(body)


def wrk_script(path: Path, body: str) -> Path:
    lua_body = body.replace("\\", "\\\\").replace("'", "\\'")
    path.write_text(
        f'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\nwrk.body = \'{lua_body}\'\n'
    )
    return path


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0}


def _ms(text: str) -> float:
    m = re.match(r"([\d.]+)(us|ms|s)", text)
    if not m:
        return float("nan")
    return float(m.group(1)) * _UNITS[m.group(2)]


def run_wrk(url: str, script: Path, connections: int, duration: float) -> Load:
    out = subprocess.run(
        [
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{max(1, round(duration))}s",
            "--latency",
            "-s",
            str(script),
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    errors_match = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errors = int(errors_match.group(1)) if errors_match else 0
    if socket_errors:
        errors += sum(int(g) for g in socket_errors.groups())
    return Load(rps, p50, p99, errors)


# --------------------------------------------------------------------------- processes


def tree_rss_mb(pid: int) -> float:
    total = 0
    pids = [pid]
    seen = set()
    while pids:
        p = pids.pop()
        if p in seen:
            continue
        seen.add(p)
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{p}/task").iterdir():
                children = (task / "children").read_text().split()
                pids.extend(int(c) for c in children)
    return total / 1024.0


def http_ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as resp:
            return resp.status == 200
    except Exception:
        return False


@contextlib.contextmanager
def server_process(
    argv: list[str],
    ready_url: str,
    log_path: Path,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float = 180,
) -> Iterator[tuple[subprocess.Popen[bytes], float]]:
    full_env = {**os.environ, **(env or {})}
    with open(log_path, "wb") as log_file:
        started = time.perf_counter()
        proc = subprocess.Popen(
            argv, stdout=log_file, stderr=subprocess.STDOUT, env=full_env, cwd=cwd, start_new_session=True
        )
        try:
            while not http_ready(ready_url):
                if proc.poll() is not None:
                    raise RuntimeError(f"{argv[0]} exited with {proc.returncode}; see {log_path}")
                if time.perf_counter() - started > timeout:
                    raise RuntimeError(f"{argv[0]} not ready after {timeout}s; see {log_path}")
                time.sleep(0.01)
            yield proc, time.perf_counter() - started
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


# --------------------------------------------------------------------------- the servers


PROFILE = {"enabled": False}


def profile_during(pid: int, url: str, script: Path, connections: int, duration: float, out: Path) -> str:
    """Sample the server with py-spy while wrk drives it; the hottest frames (self time), as text."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(spy).exists():
        return "py-spy not installed (pip install py-spy): no profile"
    seconds = max(2, round(duration))
    wrk = subprocess.Popen(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "-s", str(script), url], stdout=subprocess.DEVNULL
    )
    try:
        time.sleep(0.5)
        record = [spy, "record", "--pid", str(pid), "-d", str(seconds - 1), "-r", "250", "--format", "raw"]
        subprocess.run([*record, "-o", str(out), "--nonblocking"], capture_output=True, check=False)
    finally:
        wrk.wait()
    if not out.exists():
        return "py-spy could not sample the server (needs ptrace permission)"
    own: dict[str, int] = {}
    total = 0
    for line in out.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        total += int(count)
        own[frames[-1]] = own.get(frames[-1], 0) + int(count)
    top = sorted(own.items(), key=lambda kv: -kv[1])[:15]
    lines = [f"  {n / max(total, 1) * 100:5.1f}%  {frame[:120]}" for frame, n in top]
    header = f"py-spy, {total} samples at c={connections}, self time by frame (native calls count in their caller):"
    return header + "\n" + "\n".join(lines)


def measure(
    name: str,
    model: str,
    proc: subprocess.Popen[bytes],
    ready_s: float,
    infer_url: str,
    single: str,
    batch: str,
    work: Path,
    duration: float,
) -> Result:
    result = Result(name, model, ready_s)
    single_script = wrk_script(work / f"{name}-{model}-1.lua", single)
    batch_script = wrk_script(work / f"{name}-{model}-64.lua", batch)
    probe = urllib.request.Request(
        infer_url, data=single.encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(probe, timeout=30) as resp:
        if resp.status != 200:
            raise RuntimeError(f"{name}: probe request answered {resp.status}")
    run_wrk(infer_url, single_script, 8, 1.0)  # warm-up
    for c in CONCURRENCY:
        result.loads[c] = run_wrk(infer_url, single_script, c, duration)
        log(
            f"  {name:9s} {model} c={c:<2d} {result.loads[c].rps:9.0f} req/s  p50 {result.loads[c].p50_ms:7.2f} ms  p99 {result.loads[c].p99_ms:8.2f} ms  errors {result.loads[c].errors}"
        )
    batch_load = run_wrk(infer_url, batch_script, 8, duration)
    result.batch_rows_per_s = batch_load.rps * 64
    log(
        f"  {name:9s} {model} 64-row batches c=8: {result.batch_rows_per_s:,.0f} rows/s (errors {batch_load.errors})"
    )
    result.rss_mb = tree_rss_mb(proc.pid)
    if PROFILE["enabled"] and name == "mlserving":
        profile_path = work / f"{name}-{model}.pyspy"
        result.note = profile_during(proc.pid, infer_url, single_script, 32, duration, profile_path)
    return result


def bench_mlserving(model: str, paths: dict[str, Path], work: Path, duration: float) -> Result:
    port = free_port()
    cache = work / "compile-cache"
    shutil.rmtree(cache, ignore_errors=True)
    argv = [
        sys.executable,
        "-m",
        "mlserving.cli",
        "serve",
        "--model-name",
        model,
        "--model-uri",
        str(paths["skops"]),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--trust-type",
        TREE_TYPE,
        "--compile-cache-dir",
        str(cache),
        "--log-level",
        "WARNING",
    ]
    ready = f"http://127.0.0.1:{port}/v2/health/ready"
    with server_process(argv, ready, work / f"mlserving-{model}-cold.log") as (_, cold):
        pass
    with server_process(argv, ready, work / f"mlserving-{model}.log") as (proc, warm):
        url = f"http://127.0.0.1:{port}/v2/models/{model}/infer"
        result = measure(
            "mlserving",
            model,
            proc,
            warm,
            url,
            request_body("input", 1),
            request_body("input", 64),
            work,
            duration,
        )
    result.note = f"cold start (compiling) {cold:.2f} s" + (f"\n{result.note}" if result.note else "")
    return result


def bench_mlserver(model: str, paths: dict[str, Path], work: Path, duration: float) -> Result:
    python = ensure_venv(
        "mlserver",
        [
            "mlserver==1.7.1",
            "mlserver-sklearn==1.7.1",
            "uvloop==0.21.0",
            f"scikit-learn=={sklearn_version()}",
        ],
    )
    repo = work / f"mlserver-{model}"
    shutil.rmtree(repo, ignore_errors=True)
    (repo / model).mkdir(parents=True)
    shutil.copy(paths["joblib"], repo / model / "model.joblib")
    (repo / model / "model-settings.json").write_text(
        json.dumps(
            {
                "name": model,
                "implementation": "mlserver_sklearn.SKLearnModel",
                "parameters": {"uri": "./model.joblib", "version": "v1"},
            }
        )
    )
    port, grpc, metrics = free_port(), free_port(), free_port()
    (repo / "settings.json").write_text(
        json.dumps(
            {
                "http_port": port,
                "grpc_port": grpc,
                "metrics_port": metrics,
                "host": "127.0.0.1",
                "debug": False,
            }
        )
    )
    argv = [str(python.with_name("mlserver")), "start", str(repo)]
    model_ready = f"http://127.0.0.1:{port}/v2/models/{model}/ready"
    with server_process(argv, model_ready, work / f"mlserver-{model}.log", cwd=repo) as (proc, ready_s):
        url = f"http://127.0.0.1:{port}/v2/models/{model}/infer"
        outputs = ["predict_proba"]
        return measure(
            "MLServer",
            model,
            proc,
            ready_s,
            url,
            request_body("input-0", 1, outputs),
            request_body("input-0", 64, outputs),
            work,
            duration,
        )


def bench_kserve(model: str, paths: dict[str, Path], work: Path, duration: float) -> Result:
    python = ensure_venv("kserve", ["kserve", f"scikit-learn=={sklearn_version()}", "joblib"])
    script = work / "kserve_sklearn_model.py"
    script.write_text(KSERVE_MODEL)
    port, grpc = free_port(), free_port()
    argv = [
        str(python),
        str(script),
        "--model_name",
        model,
        "--model_path",
        str(paths["joblib"]),
        "--http_port",
        str(port),
        "--grpc_port",
        str(grpc),
        "--workers",
        "1",
    ]
    ready = f"http://127.0.0.1:{port}/v2/models/{model}/ready"
    with server_process(argv, ready, work / f"kserve-{model}.log") as (proc, ready_s):
        url = f"http://127.0.0.1:{port}/v2/models/{model}/infer"
        return measure(
            "KServe",
            model,
            proc,
            ready_s,
            url,
            request_body("input-0", 1),
            request_body("input-0", 64),
            work,
            duration,
        )


# --------------------------------------------------------------------------- report


def print_table(results: list[Result]) -> None:
    base = {(r.model): r for r in results if r.server == "MLServer"}
    header = f"{'server':10s} {'model':5s} " + " ".join(
        f"{'c=' + str(c) + ' req/s':>12s} {'p50 ms':>7s} {'p99 ms':>8s}" for c in CONCURRENCY
    )
    header += f" {'64-row rows/s':>14s} {'RSS MB':>7s} {'ready s':>8s} {'x MLServer (c=1/8/32)':>22s}"
    print()
    print(header)
    print("-" * len(header))
    for r in results:
        cells = " ".join(
            f"{r.loads[c].rps:12.0f} {r.loads[c].p50_ms:7.2f} {r.loads[c].p99_ms:8.2f}" for c in CONCURRENCY
        )
        ratio = ""
        if r.model in base and r.server != "MLServer":
            ratio = "/".join(
                f"{r.loads[c].rps / max(base[r.model].loads[c].rps, 1e-9):.0f}x" for c in CONCURRENCY
            )
        errors = sum(load.errors for load in r.loads.values())
        line = f"{r.server:10s} {r.model:5s} {cells} {r.batch_rows_per_s:14,.0f} {r.rss_mb:7.0f} {r.ready_s:8.2f} {ratio:>22s}"
        if errors:
            line += f"  ({errors} errors)"
        print(line)
    for r in results:
        if r.note:
            print(f"note: {r.server} {r.model}: {r.note}")
    print(
        "load generator: wrk -t1 (keep-alive), single-row V2 infer (FP64 x 20); RSS of the whole process tree."
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per wrk run")
    parser.add_argument(
        "--only",
        action="append",
        choices=["mlserving", "mlserver", "kserve"],
        help="servers to run (repeatable)",
    )
    parser.add_argument("--models", default="rf,lr", help="comma-separated: rf, lr")
    parser.add_argument("--workdir", help="keep models, scripts and logs here")
    parser.add_argument("--profile", action="store_true", help="sample mlserving with py-spy at c=32")
    args = parser.parse_args()
    PROFILE["enabled"] = args.profile
    if not shutil.which("wrk"):
        print("wrk is required: apt-get install -y wrk", file=sys.stderr)
        return 2
    servers = args.only or ["mlserving", "mlserver", "kserve"]
    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="bench-serving-"))
    work.mkdir(parents=True, exist_ok=True)
    log(f"working directory: {work}")
    paths = train(work / "models")
    runners = {"mlserving": bench_mlserving, "mlserver": bench_mlserver, "kserve": bench_kserve}
    results: list[Result] = []
    for model in [m.strip() for m in args.models.split(",") if m.strip()]:
        for server in servers:
            log(f"{server} / {model} ...")
            try:
                results.append(runners[server](model, paths[model], work, args.duration))
            except Exception as exc:
                log(f"  {server} / {model} failed: {exc}")
    with open("/proc/loadavg") as fh:
        load = fh.read().split()[:3]
    print_table(results)
    print(
        f"machine: {os.cpu_count()} CPUs, load average at the end {' '.join(load)} (other work on the machine adds noise)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
