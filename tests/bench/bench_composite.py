"""Composite-model overhead: the router's graph against a client calling the components itself.

Three real `mlserving serve` processes serve tiny affine ONNX models (``shift``, ``double``, ``swap``:
input FP32 [N, 2] -> value FP32 [N, 2]); one `mlserving route` runs these graphs over them:

- ``ensemble``: the three as children of a mean ensemble;
- ``chain``: the three as a sequence (each ``value`` becomes the next ``input``);
- ``ensemble-events``: the ensemble, every result sent as a CloudEvent to a sink that takes 200 ms
  per event (4 delivery workers, so the bounded queue fills and drops: the slow-sink case).

Measured, side by side, in one run (the best of ``--repeat`` interleaved rounds; latency by an
asyncio client on the router's own pooled HTTP client, throughput by `wrk` when installed):

- ensemble vs the client sending the three requests in parallel and averaging the answers itself,
  p50 at concurrency 1 and 8;
- chain vs the client making the three calls one after the other (ms added per hop);
- graph throughput vs the slowest component's own throughput;
- ensemble with the slow sink vs without (added p50).

    python tests/bench/bench_composite.py [--seconds 3] [--repeat 2]

On a shared machine with few cores the load generator, the router and the three servers compete
for the same CPUs, which lowers throughput figures and adds scheduling noise to latencies.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import orjson
import yaml

TESTS = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(TESTS))
sys.path.insert(0, str(TESTS / "integration" / "router"))

from graph_testing import affine_servers, ensemble, graph_route, model, sequence  # noqa: E402

from mlserving.router.upstream import Endpoint, UpstreamPool  # noqa: E402
from support import PYTHON, Proc, free_port, http_ok, wait_until  # noqa: E402

SINK_SCRIPT = TESTS / "integration" / "router" / "event_sink.py"
NAMES = ("shift", "double", "swap")
ROW = [1.0, 2.0]
JSON = [(b"content-type", b"application/json")]


def body_of(row: list[float]) -> bytes:
    return orjson.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 2], "data": row}]})


def value_of(answer: bytes) -> list[float]:
    return orjson.loads(answer)["outputs"][0]["data"]  # type: ignore[no-any-return]


# -- processes ---------------------------------------------------------------------------------------


def routes(servers: dict, sink: str) -> dict:
    nodes = [model(name, servers[name].url) for name in NAMES]
    mapping = {"value": "input"}
    events = {"sink": f"{sink}/events", "concurrency": 4}
    return {
        "routes": [
            graph_route("ensemble", "e", *nodes, ensemble("e", list(NAMES))),
            graph_route("chain", "c", *nodes, sequence("c", list(NAMES), [mapping, mapping])),
            graph_route("ensemble-events", "e", *nodes, ensemble("e", list(NAMES)), events=events),
        ]
    }


@dataclass
class Running:
    url: str
    proc: Proc


def start_router(directory: Path, table: dict, stack: contextlib.ExitStack) -> Running:
    (directory / "routes.yaml").write_text(yaml.safe_dump(table))
    port = free_port()
    proc = Proc(
        [PYTHON, "-m", "mlserving.cli", "route", "--config", str(directory / "routes.yaml"),
         "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"],
        directory / "router.log",
        env={"MLROUTER_SIGNING_KEY": "bench-composite-signing-key-0123456789"},
    )  # fmt: skip
    stack.callback(proc.stop)
    url = f"http://127.0.0.1:{port}"
    wait_until(lambda: http_ok(f"{url}/v2/health/ready"), timeout=60, message="router")
    return Running(url, proc)


def start_sink(directory: Path, stack: contextlib.ExitStack) -> str:
    port = free_port()
    proc = Proc([PYTHON, str(SINK_SCRIPT), "--port", str(port), "--delay", "0.2"], directory / "sink.log")
    stack.callback(proc.stop)
    url = f"http://127.0.0.1:{port}"
    wait_until(lambda: http_ok(f"{url}/received"), timeout=30, message="event sink")
    return url


# -- the asyncio client ------------------------------------------------------------------------------


class Client:
    """The client side of each measurement, over one keep-alive pool (the router's own lean client)."""

    def __init__(self, router: str, servers: dict) -> None:
        self.pool = UpstreamPool()
        self.router = Endpoint.parse(router)
        self.servers = {name: Endpoint.parse(servers[name].url) for name in NAMES}
        self.body = body_of(ROW)

    async def _post(self, endpoint: Endpoint, path: str, body: bytes) -> bytes:
        status, _, answer = await self.pool.request(endpoint, "POST", path, JSON, body, 30.0, 5.0)
        if status != 200:
            raise RuntimeError(f"{endpoint.url}{path} answered {status}: {answer[:300]!r}")
        return answer

    def graph(self, name: str) -> Callable[[], Awaitable[object]]:
        path = f"/v2/models/{name}/infer"
        return lambda: self._post(self.router, path, self.body)

    async def direct_parallel(self) -> list[float]:
        """The three components at once, averaged here: what the ensemble saves the client."""
        answers = await asyncio.gather(
            *(self._post(self.servers[n], f"/v2/models/{n}/infer", self.body) for n in NAMES)
        )
        values = [value_of(a) for a in answers]
        return [sum(column) / len(values) for column in zip(*values, strict=True)]

    async def direct_sequential(self) -> list[float]:
        """The three components one after the other, each answer the next request."""
        row = ROW
        for name in NAMES:
            row = value_of(await self._post(self.servers[name], f"/v2/models/{name}/infer", body_of(row)))
        return row


async def p50_ms(
    call: Callable[[], Awaitable[object]], concurrency: int, seconds: float
) -> tuple[float, float]:
    """(p50 ms, requests per second) of ``call`` run by ``concurrency`` loops for ``seconds``."""
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds

    async def loop() -> None:
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            await call()
            latencies.append(time.perf_counter() - started)

    for _ in range(20):  # warm: connections open, caches filled
        await call()
    started = time.perf_counter()
    await asyncio.gather(*(loop() for _ in range(concurrency)))
    return statistics.median(latencies) * 1000, len(latencies) / (time.perf_counter() - started)


# -- throughput --------------------------------------------------------------------------------------

WRK_SCRIPT = 'wrk.method = "POST"\nwrk.body = \'{body}\'\nwrk.headers["Content-Type"] = "application/json"\n'


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (from /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wrk_run(wrk: str, url: str, script: Path, pid: int, seconds: float) -> tuple[float, float]:
    """(req/s, CPU microseconds per request in process ``pid``) under `wrk` with 8 connections."""
    argv = [wrk, "-t1", "-c8", f"-d{max(1, round(seconds))}s", "-s", str(script), url]
    before = cpu_seconds(pid)
    out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60).stdout
    used = cpu_seconds(pid) - before
    found, total = re.search(r"Requests/sec:\s+([\d.]+)", out), re.search(r"(\d+) requests in", out)
    if not found or not total or "Non-2xx" in out:
        raise RuntimeError(f"wrk on {url}:\n{out}")
    return float(found.group(1)), used / int(total.group(1)) * 1e6


def throughput(
    router: Proc, servers: dict, directory: Path, seconds: float
) -> dict[str, tuple[float, float]]:
    """req/s and CPU us/request of the ensemble (in the router) and of each component alone."""
    wrk = shutil.which("wrk")
    if wrk is None:
        print("wrk not found (apt-get install -y wrk): no throughput figures", file=sys.stderr)
        return {}
    script = directory / "post.lua"
    script.write_text(WRK_SCRIPT.format(body=body_of(ROW).decode()))
    targets = {"ensemble": (f"{router.url}/v2/models/ensemble/infer", router.proc.pid)}
    targets.update({n: (f"{servers[n].url}/v2/models/{n}/infer", servers[n].proc.pid) for n in NAMES})
    return {name: wrk_run(wrk, url, script, pid, seconds) for name, (url, pid) in targets.items()}


# -- the run -----------------------------------------------------------------------------------------


async def latencies(client: Client, seconds: float, repeat: int) -> dict[str, tuple[float, float]]:
    """Best (lowest p50) of ``repeat`` interleaved rounds of every latency measurement."""
    cases: dict[str, tuple[Callable[[], Awaitable[object]], int]] = {
        "ensemble c1": (client.graph("ensemble"), 1),
        "direct parallel c1": (client.direct_parallel, 1),
        "ensemble c8": (client.graph("ensemble"), 8),
        "direct parallel c8": (client.direct_parallel, 8),
        "chain c1": (client.graph("chain"), 1),
        "direct sequential c1": (client.direct_sequential, 1),
        "ensemble+slow sink c1": (client.graph("ensemble-events"), 1),
    }
    best: dict[str, tuple[float, float]] = {}
    for round_ in range(repeat):
        for name, (call, concurrency) in cases.items():
            p50, rps = await p50_ms(call, concurrency, seconds)
            print(f"  round {round_ + 1} {name:22s} p50 {p50:7.3f} ms  {rps:8,.0f} req/s", flush=True)
            if name not in best or p50 < best[name][0]:
                best[name] = (p50, rps)
    return best


def print_table(
    lat: dict[str, tuple[float, float]], rps: dict[str, tuple[float, float]], events: str
) -> None:
    def p50(name: str) -> float:
        return lat[name][0]

    rows = [
        ("3-child ensemble vs 3 parallel direct calls, c=1", p50("ensemble c1"), p50("direct parallel c1"),
         f"{p50('ensemble c1') - p50('direct parallel c1'):+.3f} ms p50", "<= 1 ms"),
        ("3-child ensemble vs 3 parallel direct calls, c=8", p50("ensemble c8"), p50("direct parallel c8"),
         f"{p50('ensemble c8') - p50('direct parallel c8'):+.3f} ms p50", "<= 2 ms"),
        ("3-node sequence vs 3 sequential direct calls, c=1", p50("chain c1"), p50("direct sequential c1"),
         f"{(p50('chain c1') - p50('direct sequential c1')) / 3:+.3f} ms per hop", "<= 1 ms"),
        ("ensemble with a 200 ms/event sink vs without, c=1", p50("ensemble+slow sink c1"), p50("ensemble c1"),
         f"{p50('ensemble+slow sink c1') - p50('ensemble c1'):+.3f} ms p50", "<= 0.2 ms"),
    ]  # fmt: skip
    print(f"\n{'measurement':52s} {'graph ms':>9s} {'base ms':>9s}  {'result':22s} {'target':>9s}")
    for label, graph_ms, base_ms, result, target in rows:
        print(f"{label:52s} {graph_ms:9.3f} {base_ms:9.3f}  {result:22s} {target:>9s}")
    if rps:
        slowest = min(NAMES, key=lambda n: rps[n][0])
        (graph_rps, graph_cpu), (component_rps, component_cpu) = rps["ensemble"], rps[slowest]
        label = f"ensemble req/s vs slowest component ({slowest}), c=8"
        result = f"{graph_rps / component_rps:.0%} of its req/s"
        print(f"{label:52s} {graph_rps:9,.0f} {component_rps:9,.0f}  {result:22s} {'>= 70%':>9s}")
        label, result = (
            "CPU us/request: router (3 calls) vs component",
            f"{component_cpu / graph_cpu:.0%} per core",
        )
        print(f"{label:52s} {graph_cpu:9.0f} {component_cpu:9.0f}  {result:22s}")
    print(f"\nevents to the slow sink during the run: {events}")
    print(f"({os.cpu_count()} CPUs shared by the client, the router, the three servers and the sink)")


def event_counts(router: str) -> str:
    import urllib.request

    with urllib.request.urlopen(f"{router}/metrics", timeout=5) as response:
        text = response.read().decode()
    counts = dict(
        re.findall(r'mlgraph_events_total\{graph="ensemble-events",outcome="(\w+)"\} ([\d.e+]+)', text)
    )
    return ", ".join(f"{k} {float(v):,.0f}" for k, v in sorted(counts.items())) or "none"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=3.0, help="seconds per latency measurement")
    parser.add_argument("--repeat", type=int, default=2, help="interleaved rounds; the best is kept")
    args = parser.parse_args()
    import uvloop

    with tempfile.TemporaryDirectory(prefix="bench-composite-") as name, contextlib.ExitStack() as stack:
        directory = Path(name)
        print("starting three model servers, the event sink and the router ...", flush=True)
        servers = stack.enter_context(affine_servers(directory / "models"))
        sink = start_sink(directory, stack)
        router = start_router(directory, routes(servers, sink), stack)
        client = Client(router.url, servers)

        async def run() -> dict[str, tuple[float, float]]:
            same = (await client.graph("ensemble")(), await client.direct_parallel())
            if value_of(same[0]) != same[1]:  # type: ignore[arg-type]
                raise RuntimeError(f"the graph answers {same[0]!r}, the client computes {same[1]}")
            return await latencies(client, args.seconds, args.repeat)

        lat = uvloop.run(run())
        rps = throughput(router, servers, directory, args.seconds)
        print_table(lat, rps, event_counts(router.url))
    return 0


if __name__ == "__main__":
    sys.exit(main())
