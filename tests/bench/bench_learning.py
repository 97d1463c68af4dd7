"""Online learning, measured: one run, one table (`make bench-learning`).

Learner throughput: joined, labelled samples per second, end to end, with the Delta log on. An
SGDClassifier on 20 features (make_classification) learns from a stream in batches of 32, with the
production-data log and snapshots written to a local directory. Each sample is logged as a served
request, then labelled by feedback that waits until its row is written (the learner's
acknowledgement); the clock stops when every whole batch is learned.

- in process: the learner's own work, driven through the calls its HTTP handlers make (join, group
  commit to Delta, partial_fit, snapshots every ``--snapshot-every`` samples);
- over HTTP: a real ``mlserving learn`` process, logs posted in batches of 512 and feedback batched
  as a forwarder sends it (``POST /v1/feedback``, 512 per request, 4 connections); with
  ``--per-request`` also one feedback request per sample (``--connections`` concurrent connections,
  each waiting for its row's commit, so that rate is bound by connections / commit latency).

Then the serving replicas (``bench_learning_replicas.py``: publish -> every replica serving, hot
reloads under wrk, p50 with learning on and off) and the drift scenario of `make demo` on the local
playground (``mlrollouts.local.demo_learning``: accuracy after the drift of the online model and of
its static copy, and how far into a poisoned burst serving was rolled back).

    python tests/bench/bench_learning.py [--samples 50000] [--no-drift] [--per-request]
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from mlserving.learning.location import StorageLocation
from mlserving.learning.pipeline import LearningPipeline, PipelineConfig
from mlserving.learning.records import LoggedRequest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_learning_replicas import KEY, ReplicaResults, measure, start_learner, stream

from support import wait_until


async def run_pipeline(
    args: argparse.Namespace, initial: object, x: np.ndarray, y: np.ndarray, root: Path
) -> dict:
    config = PipelineConfig(
        model_name="bench",
        batch_size=args.batch_size,
        snapshot_every=args.snapshot_every,
        unknown_id_wait=0.0,
    )
    pipeline = LearningPipeline(
        config, initial_estimator=copy.deepcopy(initial), location=StorageLocation(root.as_uri()), key=KEY
    )
    await pipeline.start()
    while not pipeline.ready:
        await asyncio.sleep(0.01)
    chunks = np.array_split(np.arange(len(y)), max(1, len(y) // 1024))
    started = time.perf_counter()

    async def produce(indices: np.ndarray) -> None:
        now = time.time()
        pipeline.ingest([LoggedRequest(f"r{i}", x[i : i + 1], (0,), 0, now) for i in indices])
        answers = await asyncio.gather(*(pipeline.feedback(f"r{i}", int(y[i])) for i in indices))
        assert all(answer.status == 200 for answer in answers), answers[0]

    producers = asyncio.Semaphore(args.producers)

    async def bounded(indices: np.ndarray) -> None:
        async with producers:
            await produce(indices)

    await asyncio.gather(*(bounded(chunk) for chunk in chunks))
    acknowledged = time.perf_counter() - started
    whole = len(y) - len(y) % args.batch_size
    while pipeline.learner.samples < whole:
        await asyncio.sleep(0.005)
    learned = time.perf_counter() - started
    while pipeline.unpublished_snapshots:
        await asyncio.sleep(0.01)
    result = {
        "mode": "in process",
        "samples": len(y),
        "acknowledged_per_s": len(y) / acknowledged,
        "end_to_end_per_s": whole / learned,
        "commits": (pipeline.datalog.version or 0) + 1,
        "snapshots": f"{pipeline.snapshot_version}+{pipeline.skipped_snapshots}",
        "accuracy": pipeline.learner.metrics.get("accuracy", float("nan")),
    }
    await pipeline.stop()
    return result


async def drive_http(url: str, x: np.ndarray, y: np.ndarray, *, batched: bool, connections: int) -> float:
    """Log every sample (batches of 512), then send its feedback; seconds until all are acknowledged."""
    import aiohttp

    async with aiohttp.ClientSession(url, connector=aiohttp.TCPConnector(limit=connections)) as session:
        started = time.perf_counter()
        for start in range(0, len(y), 512):
            records = [
                {"id": f"r{i}", "features": x[i].tolist(), "prediction": 0, "snapshot": 0}
                for i in range(start, min(start + 512, len(y)))
            ]
            async with session.post("/v1/log", json={"records": records}) as response:
                assert response.status == 200, await response.text()
        pending = iter(range(0, len(y), 512) if batched else range(len(y)))

        async def sender() -> None:
            for first in pending:
                if batched:
                    items = [
                        {"id": f"r{i}", "label": int(y[i])} for i in range(first, min(first + 512, len(y)))
                    ]
                    async with session.post("/v1/feedback", json={"feedback": items}) as response:
                        results = (await response.json())["results"]
                    assert {r["status"] for r in results} == {200}, results[0]
                else:
                    body = {"id": f"r{first}", "label": int(y[first])}
                    async with session.post("/v2/models/bench/feedback", json=body) as response:
                        assert response.status == 200, await response.text()

        await asyncio.gather(*(sender() for _ in range(connections)))
        return time.perf_counter() - started


def run_http(
    args: argparse.Namespace, initial: object, x: np.ndarray, y: np.ndarray, root: Path, *, batched: bool
) -> dict:
    import httpx

    connections = 4 if batched else args.connections
    proc, url = start_learner(
        root / "work", initial, root / "store", batch_size=args.batch_size, snapshot_every=args.snapshot_every
    )
    try:
        acknowledged = asyncio.run(drive_http(url, x, y, batched=batched, connections=connections))
        whole = len(y) - len(y) % args.batch_size
        started_wait = time.perf_counter()
        wait_until(
            lambda: httpx.get(f"{url}/v1/status").json()["samples"] >= whole, timeout=120, interval=0.01
        )
        learned = acknowledged + time.perf_counter() - started_wait
        status = httpx.get(f"{url}/v1/status").json()
        endpoint = "/v1/feedback x512" if batched else "one feedback a request"
        return {
            "mode": f"over HTTP, {endpoint}, {connections} conn",
            "samples": len(y),
            "acknowledged_per_s": len(y) / acknowledged,
            "end_to_end_per_s": whole / learned,
            "commits": (status["data_version"] or 0) + 1,
            "snapshots": f"{status['snapshot_version']}+{status['skipped_snapshots']}",
            "accuracy": status["metrics"].get("accuracy", float("nan")),
        }
    finally:
        proc.stop()


def drift_scenario(work: Path) -> dict[str, Any]:
    """The learning scenario of `make demo` on a fresh playground; what it measured."""
    from mlrollouts.local import demo_learning
    from mlrollouts.local.demo_scenario import DemoContext
    from mlrollouts.local.drift import rolling_accuracy
    from mlrollouts.local.playground import Playground

    playground = Playground(work / "state").start()
    try:
        scenario = demo_learning.build(DemoContext(playground), work / "models")
        try:
            scenario.run()
        finally:
            scenario.stop()
    finally:
        playground.stop()
    schedule, outcomes, rollback = scenario.stream.schedule, scenario.stream.outcomes, scenario.rollback
    guard = scenario.guard
    online, static = scenario.accuracy_after_drift()
    served_pinned = min(
        (o.index for o in outcomes if o.t >= rollback["t"] and o.snapshot == rollback["pinned"]), default=None
    )
    below = [a < guard["min"] for _, a in rolling_accuracy(outcomes, "online", int(guard["window"]))]
    longest = run = 0
    for low in below[int(guard["window"]) :]:  # a full window of answers first
        run = run + 1 if low else 0
        longest = max(longest, run)
    return {
        "online": online,
        "static": static,
        "poisoned_at_pin": rollback["poisoned_sent"],
        "poisoned_at_served": None if served_pinned is None else served_pinned - schedule.poison_at,
        "window": int(guard["window"]),
        "below_guard": longest,
        "guard_min": guard["min"],
    }


def table(rows: list[tuple[str, str, str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    return "\n".join(f"{a:<{widths[0]}}  {b:<{widths[1]}}  {c}" for a, b, c in rows)


def replica_rows(r: ReplicaResults, reloads_wanted: int) -> list[tuple[str, str, str]]:
    on, off = statistics.median(r.p50_on), statistics.median(r.p50_off)
    return [
        (
            f"snapshot publish -> all {r.replicas} replicas serving it",
            "<= 1000 ms",
            f"p50 {statistics.median(r.publish_ms):.0f} ms, max {max(r.publish_ms):.0f} ms "
            f"({len(r.publish_ms)} snapshots)",
        ),
        (
            "promotion Canary: candidate pointer -> candidate replica serving it",
            "<= 1000 ms",
            f"p50 {statistics.median(r.candidate_ms):.0f} ms, max {max(r.candidate_ms):.0f} ms "
            f"({len(r.candidate_ms)} changes)",
        ),
        (
            f"failed requests across {reloads_wanted} hot reloads under load (wrk)",
            "0",
            f"{r.reload.failed} of {r.reload.requests} ({r.reload.reloads} reloads)",
        ),
        (
            "serving p50, learning on vs off (hey, 200 req/s)",
            "within 10 %",
            f"{on:.2f} ms vs {off:.2f} ms ({(on / off - 1) * 100:+.0f} %)",
        ),
    ]


def drift_rows(d: dict[str, Any]) -> list[tuple[str, str, str]]:
    served = "-" if d["poisoned_at_served"] is None else str(d["poisoned_at_served"])
    return [
        (
            "drift scenario: accuracy after the drift, online / static",
            ">= 0.90 / <= 0.65",
            f"{d['online']:.3f} / {d['static']:.3f}",
        ),
        (
            "poisoned burst: flipped labels sent until the guard pinned / replicas served it",
            f"<= {d['window']} (window)",
            f"{d['poisoned_at_pin']} / {served}",
        ),
        (
            f"served accuracy below the guard ({d['guard_min']}) over the last {d['window']}",
            f"<= {d['window']} samples",
            f"{d['below_guard']} samples",
        ),
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=50_000)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--snapshot-every", type=int, default=1000)
    parser.add_argument("--producers", type=int, default=4, help="concurrent chunks of 1024 samples")
    parser.add_argument("--http-samples", type=int, default=20_000)
    parser.add_argument("--per-request", action="store_true", help="also one feedback request per sample")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument("--reloads", type=int, default=50)
    parser.add_argument("--no-drift", action="store_true", help="skip the drift scenario on the playground")
    args = parser.parse_args()

    initial, x, y = stream(max(args.samples, args.http_samples))
    n = args.http_samples
    rows = [("measure", "target", "measured")]
    with tempfile.TemporaryDirectory(prefix="bench-learning-") as tmp:
        root = Path(tmp)
        inside = asyncio.run(run_pipeline(args, initial, x[: args.samples], y[: args.samples], root / "a"))
        http = [run_http(args, initial, x[:n], y[:n], root / "b", batched=True)]
        if args.per_request:
            http.append(run_http(args, initial, x[:n], y[:n], root / "c", batched=False))
        replicas = measure(root / "d", replicas=args.replicas, reloads=args.reloads, rounds=10, poll=0.5)
        drift = None if args.no_drift else drift_scenario(root / "e")
    for result in (inside, *http):
        rows.append(
            (
                f"learner throughput, {result['mode']} (SGDClassifier, 20 features, batch {args.batch_size}, Delta log)",
                ">= 5000 samples/s",
                f"{result['end_to_end_per_s']:.0f} samples/s learned ({result['acknowledged_per_s']:.0f}/s acknowledged)",
            )
        )
    rows += replica_rows(replicas, args.reloads)
    if drift is not None:
        rows += drift_rows(drift)
    print()
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
