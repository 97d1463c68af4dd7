"""Online learning as the serving replicas see it, with a real learner and real model servers.

- publish -> served: labelled samples that complete a snapshot are acknowledged by the learner; the
  clock stops when every replica serves the new snapshot (``mlserving_snapshot_version``);
- candidate pointer -> served (promotion Canary): the learner acknowledges a new candidate snapshot;
  the clock stops when the candidate-snapshot replica (``--snapshot-pointer candidate``) serves it;
- hot reloads under load: ``wrk`` posts single-row requests to a replica while the learner publishes
  snapshots one after another; each one is waited for on that replica (a reload), and the failed
  requests are wrk's non-2xx answers and socket errors;
- serving p50 with learning on (every request logged to the learner, snapshots hot-loaded) and off
  (the same initial model, no learner), at a fixed request rate (``hey -q``), interleaved.

    python tests/bench/bench_learning_replicas.py [--replicas 3] [--reloads 50]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from support import PYTHON, Proc, free_port, http_ok, wait_until
from support.models import RunningServer, metric_value, serving

KEY = b"benchmark-signing-key-0123456789"
FEATURES = 20
MODEL = "bench"
FEED_CHUNK = 512


def stream(samples: int) -> tuple[object, np.ndarray, np.ndarray]:
    """An SGDClassifier fitted on 500 samples of a 20-feature task, and ``samples`` more of it."""
    from sklearn.datasets import make_classification
    from sklearn.linear_model import SGDClassifier

    x, y = make_classification(samples + 500, FEATURES, n_informative=10, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        initial = SGDClassifier(loss="log_loss", random_state=0).fit(x[:500], y[:500])
    return initial, x[500:], y[500:]


def start_learner(
    work: Path, initial: object, storage: Path, *, batch_size: int, snapshot_every: int
) -> tuple[Proc, str]:
    """``mlserving learn`` of ``initial`` (written as skops) on a free port; ready when it answers."""
    import skops.io as sio

    work.mkdir(parents=True, exist_ok=True)
    sio.dump(initial, work / "model.skops")
    (work / "key").write_bytes(KEY)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    argv = [
        PYTHON, "-m", "mlserving.learning", "--model-name", MODEL,
        "--model-uri", str(work / "model.skops"), "--storage-uri", storage.as_uri(),
        "--signing-key-file", str(work / "key"), "--host", "127.0.0.1", "--port", str(port),
        "--batch-size", str(batch_size), "--snapshot-every", str(snapshot_every),
        "--unknown-id-wait", "0", "--log-level", "WARNING",
    ]  # fmt: skip
    proc = Proc(argv, work / "learner.log")
    wait_until(lambda: http_ok(f"{url}/v2/health/ready"), timeout=60, message="learner ready")
    return proc, url


def feed(client: httpx.Client, x: np.ndarray, y: np.ndarray, first: int) -> None:
    """Log samples ``first..`` as served requests, then label them; returns once all are acknowledged."""
    for start in range(0, len(y), FEED_CHUNK):
        ids = range(first + start, first + min(start + FEED_CHUNK, len(y)))
        records = [
            {"id": f"r{i}", "features": x[i - first].tolist(), "prediction": 0, "snapshot": 0} for i in ids
        ]
        assert client.post("/v1/log", json={"records": records}).status_code == 200
        labels = [{"id": f"r{i}", "label": int(y[i - first])} for i in ids]
        results = client.post("/v1/feedback", json={"feedback": labels}).json()["results"]
        assert {r["status"] for r in results} == {200}, results[0]


def served_version(server: RunningServer) -> float:
    value = metric_value(httpx.get(f"{server.url}/metrics", timeout=5).text, "mlserving_snapshot_version")
    return -1.0 if value is None else value


def snapshot_loads(server: RunningServer) -> float:
    value = metric_value(httpx.get(f"{server.url}/metrics", timeout=5).text, "mlserving_snapshot_loads_total")
    return 0.0 if value is None else value


@dataclass
class Learning:
    """A learner and its serving replicas; ``publish`` learns one more snapshot's worth of samples."""

    url: str
    servers: list[RunningServer]
    x: np.ndarray
    y: np.ndarray
    snapshot_every: int
    client: httpx.Client
    flags: list[str]
    """The serving flags of a replica of this learner."""
    fed: int = 0
    version: int = 0

    def publish(self) -> tuple[int, float]:
        """Feed the samples of the next snapshot; (its version, perf_counter when they were acknowledged)."""
        n = self.snapshot_every
        if self.fed + n > len(self.y):
            raise RuntimeError(f"the stream has {len(self.y)} samples; {self.fed + n} are needed")
        feed(self.client, self.x[self.fed : self.fed + n], self.y[self.fed : self.fed + n], self.fed)
        self.fed += n
        self.version += 1
        return self.version, time.perf_counter()

    def wait_served(self, version: int, servers: list[RunningServer], timeout: float = 15.0) -> None:
        wait_until(
            lambda: all(served_version(s) >= version for s in servers),
            timeout=timeout,
            interval=0.005,
            message=f"snapshot {version} served by {len(servers)} replicas",
        )


@contextlib.contextmanager
def learning(
    work: Path, samples: int, *, replicas: int, snapshot_every: int, poll: float
) -> Iterator[Learning]:
    initial, x, y = stream(samples)
    storage = work / "store"
    proc, url = start_learner(
        work / "learner", initial, storage, batch_size=32, snapshot_every=snapshot_every
    )
    flags = [
        *("--learner-url", url),
        *("--snapshot-uri", storage.as_uri()),
        *("--snapshot-key-file", str(work / "learner" / "key")),
        *("--snapshot-poll-interval", str(poll)),
        *("--log-level", "WARNING"),
    ]
    try:
        with contextlib.ExitStack() as stack, httpx.Client(base_url=url, timeout=60) as client:
            servers = [
                stack.enter_context(
                    serving(
                        work,
                        work / "learner" / "model.skops",
                        name=MODEL,
                        extra=[*flags, "--download-dir", str(work / f"r{i}")],
                    )
                )
                for i in range(replicas)
            ]
            setup = Learning(url, servers, x, y, snapshot_every, client, flags)
            setup.wait_served(0, servers, timeout=30)
            yield setup
    finally:
        proc.stop()


def publish_latency(setup: Learning, rounds: int) -> list[float]:
    """Milliseconds from the acknowledgement of a snapshot's last label to every replica serving it."""
    times = []
    for _ in range(rounds):
        version, acknowledged = setup.publish()
        setup.wait_served(version, setup.servers)
        times.append((time.perf_counter() - acknowledged) * 1000)
    return times


def candidate_latency(setup: Learning, work: Path, rounds: int) -> list[float]:
    """Milliseconds from the learner's acknowledgement of a new candidate snapshot (what the operator
    asks when a snapshot canary starts) to a candidate-snapshot replica serving it."""
    flags = [*setup.flags, "--snapshot-pointer", "candidate", "--download-dir", str(work / "candidate")]
    with serving(work, work / "learner" / "model.skops", name=MODEL, extra=flags) as candidate:
        return candidate_rounds(setup, candidate, rounds)


def candidate_rounds(setup: Learning, candidate: RunningServer, rounds: int) -> list[float]:
    times = []
    for index in range(rounds):
        target = setup.version - 1 - index % 2  # two older snapshots in turn: each round is a change
        started = time.perf_counter()
        setup.client.post("/v1/candidate", json={"snapshot": target}).raise_for_status()
        wait_until(
            lambda t=target: served_version(candidate) == t,
            timeout=15,
            interval=0.005,
            message=f"candidate snapshot {target} served",
        )
        times.append((time.perf_counter() - started) * 1000)
    setup.client.post("/v1/candidate", json={"snapshot": None}).raise_for_status()
    return times


def infer_body(row: np.ndarray) -> str:
    return json.dumps(
        {"inputs": [{"name": "input", "shape": [1, FEATURES], "datatype": "FP64", "data": row.tolist()}]}
    )


def wrk_script(path: Path, body: str) -> Path:
    path.write_text(
        f'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\nwrk.body = \'{body}\'\n'
    )
    return path


@dataclass
class ReloadLoad:
    reloads: int
    requests: int
    failed: int
    seconds: float


def reloads_under_load(setup: Learning, work: Path, reloads: int, connections: int = 8) -> ReloadLoad:
    """``reloads`` snapshots hot-loaded by one replica while wrk drives it; wrk's failed requests."""
    target = setup.servers[0]
    started = time.perf_counter()
    version, _ = setup.publish()
    setup.wait_served(version, [target])
    per_reload = time.perf_counter() - started
    duration = max(10, round(per_reload * reloads * 1.5) + 5)
    script = wrk_script(work / "infer.lua", infer_body(setup.x[0]))
    before = snapshot_loads(target)
    wrk = subprocess.Popen(
        [
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{duration}s",
            "-s",
            str(script),
            f"{target.url}/v2/models/{MODEL}/infer",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(1.0)  # load first, then reloads
        for _ in range(reloads):
            version, _ = setup.publish()
            setup.wait_served(version, [target])
        done = snapshot_loads(target) - before
        out, _ = wrk.communicate(timeout=duration + 30)
    finally:
        if wrk.poll() is None:
            wrk.kill()
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    sockets = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    failed = (int(non_2xx.group(1)) if non_2xx else 0) + (sum(map(int, sockets.groups())) if sockets else 0)
    return ReloadLoad(int(done), requests, failed, float(duration))


def hey_p50(url: str, body: str, seconds: int, workers: int, rate: float) -> tuple[float, int]:
    """p50 in ms of ``workers`` x ``rate`` requests a second for ``seconds``, and the non-200 answers."""
    out = subprocess.run(
        [
            "hey", "-z", f"{seconds}s", "-c", str(workers), "-q", f"{rate:g}", "-m", "POST",
            "-T", "application/json", "-d", body, url,
        ],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    p50 = float(re.search(r"50%+ in ([\d.]+) secs", out).group(1)) * 1000  # type: ignore[union-attr]
    ok = sum(int(n) for n in re.findall(r"\[200\]\s+(\d+) responses", out))
    total = sum(int(n) for n in re.findall(r"\[\d+\]\s+(\d+) responses", out))
    errors = re.search(r"Error distribution:(.*)", out, re.S)
    return p50, (total - ok) + (len(errors.group(1).strip().splitlines()) if errors else 0)


def p50_on_off(
    setup: Learning, work: Path, rounds: int = 2, seconds: int = 6
) -> tuple[list[float], list[float]]:
    """Serving p50 of a learning replica and of a replica of the same model without learning."""
    body = infer_body(setup.x[0])
    on, off = [], []
    with serving(
        work, work / "learner" / "model.skops", name=MODEL, extra=["--log-level", "WARNING"]
    ) as plain:
        for server in (setup.servers[0], plain):  # warm-up
            hey_p50(f"{server.url}/v2/models/{MODEL}/infer", body, 2, 4, 50)
        for _ in range(rounds):
            for server, into in ((plain, off), (setup.servers[0], on)):
                p50, failed = hey_p50(f"{server.url}/v2/models/{MODEL}/infer", body, seconds, 4, 50)
                assert failed == 0, f"{failed} failed requests at {server.url}"
                into.append(p50)
    return on, off


@dataclass
class ReplicaResults:
    replicas: int
    publish_ms: list[float]
    reload: ReloadLoad
    p50_on: list[float]
    p50_off: list[float]
    candidate_ms: list[float]


def measure(work: Path, *, replicas: int, reloads: int, rounds: int, poll: float) -> ReplicaResults:
    snapshot_every = 32
    samples = snapshot_every * (rounds + reloads + 4)
    with learning(work, samples, replicas=replicas, snapshot_every=snapshot_every, poll=poll) as setup:
        publish_ms = publish_latency(setup, rounds)
        candidate_ms = candidate_latency(setup, work, rounds=6)
        reload = reloads_under_load(setup, work, reloads)
        p50_on, p50_off = p50_on_off(setup, work)
    return ReplicaResults(replicas, publish_ms, reload, p50_on, p50_off, candidate_ms)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument("--reloads", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=10, help="snapshots timed from publish to served")
    parser.add_argument("--poll", type=float, default=0.5, help="replicas' --snapshot-poll-interval (s)")
    args = parser.parse_args()
    for tool in ("wrk", "hey"):
        if not shutil.which(tool):
            print(f"{tool} is required: apt-get install -y {tool}", file=sys.stderr)
            return 1
    with tempfile.TemporaryDirectory(prefix="bench-learning-replicas-") as tmp:
        r = measure(
            Path(tmp), replicas=args.replicas, reloads=args.reloads, rounds=args.rounds, poll=args.poll
        )
    print(
        f"publish -> all {r.replicas} replicas serving: p50 {statistics.median(r.publish_ms):.0f} ms, max {max(r.publish_ms):.0f} ms"
    )
    print(
        f"candidate pointer -> candidate replica serving: p50 {statistics.median(r.candidate_ms):.0f} ms, "
        f"max {max(r.candidate_ms):.0f} ms"
    )
    print(
        f"{r.reload.reloads} hot reloads under wrk: {r.reload.failed} failed of {r.reload.requests} requests"
    )
    print(
        f"serving p50 learning on {statistics.median(r.p50_on):.2f} ms, off {statistics.median(r.p50_off):.2f} ms"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
