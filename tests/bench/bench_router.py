"""Router overhead and throughput against the model servers directly and against nginx.

Two real `mlserving serve` processes (the iris classifier as ONNX, model names ``iris-stable`` and
``iris-canary``) are the upstreams. The same load generator (`wrk`, one connection per concurrent
client, keep-alive, a V2 inference request of one row) hits, in turn:

- ``direct``: the stable model server itself;
- ``router``: `mlserving route` (one worker process), route ``iris`` split 90/10 over both servers;
- ``nginx``: Debian nginx (one worker), ``split_clients`` 90%/10% over the same servers with
  keep-alive upstream pools (the industry anchor for weighted proxying);
- ``floor``: ``floor_proxy.py``, the least a Python proxy can do (callbacks under uvloop, no
  split, ids, metrics or timeouts) in front of the stable server: what the event loop, the parser
  and the system calls cost, below which no Python router can go.

Router overhead = router p50 - direct p50, at concurrency 1 and 8 (target <= 0.5 ms). On a shared
machine (few cores, other jobs) absolute numbers are noisy; the load generator, the proxy and the
model server all compete for the same cores, which lowers every throughput figure.

    python tests/bench/bench_router.py [--duration 5] [--concurrency 1 8] [--profile router.prof]

``--profile`` runs the router under cProfile (CPU-time clock) and prints its top functions; its CPU per
request is then the profiler's, not the router's.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from support import PYTHON, Proc, free_port, http_ok, wait_until
from support.models import serve_argv, train_iris_models

ROW = [5.1, 3.5, 1.4, 0.2]

NGINX_CONF = """
worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    upstream stable {{ server 127.0.0.1:{stable}; keepalive 64; }}
    upstream canary {{ server 127.0.0.1:{canary}; keepalive 64; }}
    split_clients "$request_id" $variant {{
        90% stable;
        *   canary;
    }}
    map $variant $model {{ stable iris-stable; canary iris-canary; }}
    server {{
        listen 127.0.0.1:{port};
        location ~ ^/v2/models/iris/(.*)$ {{
            proxy_pass http://$variant/v2/models/$model/$1;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            add_header x-mlrollouts-variant $variant;
        }}
    }}
}}
"""

# The router under cProfile, timed by CPU time; SIGTERM (the end of the benchmark) writes the profile.
PROFILED_ROUTER = """
import cProfile, os, signal, sys, time
from mlserving.cli import main
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
profile = cProfile.Profile(time.process_time)
profile.enable()
try:
    main(sys.argv[1:])
finally:
    profile.disable()
    profile.dump_stats(os.environ["BENCH_ROUTER_PROFILE"])
"""

WRK_SCRIPT = """
wrk.method = "POST"
wrk.body = '{body}'
wrk.headers["Content-Type"] = "application/json"
"""


def body_for(model_url_path: str) -> str:
    import json

    return json.dumps({"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP64", "data": ROW}]})


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of processes (from /proc), in seconds."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / ticks


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(int(entry.name))
    return found


def parse_latency(text: str) -> float:
    """wrk's 50th percentile, in milliseconds."""
    match = re.search(r"^\s*50%\s+([\d.]+)(us|ms|s)\s*$", text, re.MULTILINE)
    if not match:
        raise RuntimeError(f"cannot parse wrk output:\n{text}")
    value, unit = float(match.group(1)), match.group(2)
    return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value


def run_wrk(wrk: str, url: str, script: Path, connections: int, duration: float) -> tuple[float, float, str]:
    argv = [
        wrk,
        "-t1",
        f"-c{connections}",
        f"-d{max(1, round(duration))}s",
        "--latency",
        "-s",
        str(script),
        url,
    ]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 60)
    out = result.stdout
    found = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if result.returncode != 0 or not found:
        raise RuntimeError(f"wrk failed on {url} (exit {result.returncode}):\n{out}\n{result.stderr}")
    rps = float(found.group(1))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors:
        raise RuntimeError(f"{url}: {errors.group(1)} failed responses\n{out}")
    total = re.search(r"(\d+) requests in", out)
    return parse_latency(out), rps, int(total.group(1)) if total else 0


def compare_clients(url: str, requests: int = 1500) -> list[tuple[str, float, float]]:
    """p50 latency and client CPU per request: the router's own pooled client, aiohttp and httpx."""
    import statistics

    import aiohttp
    import httpx
    import uvloop

    body = body_for("").encode()
    headers = {"content-type": "application/json"}

    async def with_aiohttp() -> list[float]:
        times = []
        async with aiohttp.ClientSession() as session:
            for _ in range(requests):
                started = time.perf_counter()
                async with session.post(url, data=body, headers=headers) as response:
                    await response.read()
                times.append(time.perf_counter() - started)
        return times

    async def with_httpx() -> list[float]:
        times = []
        async with httpx.AsyncClient() as client:
            for _ in range(requests):
                started = time.perf_counter()
                (await client.post(url, content=body, headers=headers)).read()
                times.append(time.perf_counter() - started)
        return times

    async def with_router_client() -> list[float]:
        from mlserving.router.upstream import Endpoint, UpstreamPool

        pool = UpstreamPool()
        base, _, path = url.partition("/v2/")
        endpoint = Endpoint.parse(base)
        raw_headers = [(b"content-type", b"application/json")]
        times = []
        for _ in range(requests):
            started = time.perf_counter()
            await pool.request(endpoint, "POST", "/v2/" + path, raw_headers, body, 30.0, 5.0)
            times.append(time.perf_counter() - started)
        pool.close()
        return times

    rows = []
    clients = (("router's", with_router_client), ("aiohttp", with_aiohttp), ("httpx", with_httpx))
    for name, run in clients * 2:
        cpu = time.process_time()
        times = uvloop.run(run())
        cpu_us = (time.process_time() - cpu) / requests * 1e6
        rows.append((name, statistics.median(times[100:]) * 1000, cpu_us))
    best: dict[str, tuple[str, float, float]] = {}
    for row in rows:
        if row[0] not in best or row[1] < best[row[0]][1]:
            best[row[0]] = row
    return list(best.values())


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per measurement")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--repeat", type=int, default=2, help="interleaved repetitions; the best is kept")
    parser.add_argument("--skip-clients", action="store_true", help="skip the aiohttp vs httpx comparison")
    parser.add_argument(
        "--profile", metavar="FILE", help="run the router under cProfile, write the profile here"
    )
    args = parser.parse_args()

    wrk, nginx = shutil.which("wrk"), shutil.which("nginx")
    if not wrk:
        print("wrk not found: apt-get install -y wrk", file=sys.stderr)
        return 2

    with tempfile.TemporaryDirectory(prefix="bench-router-") as tmp_name, contextlib.ExitStack() as stack:
        tmp = Path(tmp_name)
        print("training the iris classifier ...", flush=True)
        models = train_iris_models(tmp / "models")
        servers = {}
        for name in ("stable", "canary"):
            port = free_port()
            proc = Proc(
                serve_argv(models.classifier_onnx, name=f"iris-{name}", port=port),
                tmp / f"serve-{name}.log",
                env={"MLSERVING_REVISION": name},
            )
            stack.callback(proc.stop)
            servers[name] = (port, proc)
        for name, (port, _proc) in servers.items():
            wait_until(lambda p=port: http_ok(f"http://127.0.0.1:{p}/v2/health/ready"), timeout=120,
                       message=f"mlserving {name}")  # fmt: skip

        routes = {
            "routes": [
                {
                    "name": "iris",
                    "model": "iris",
                    "variants": [
                        {"name": "stable", "upstreams": [f"http://127.0.0.1:{servers['stable'][0]}"],
                         "weight": 90, "model": "iris-stable"},
                        {"name": "canary", "upstreams": [f"http://127.0.0.1:{servers['canary'][0]}"],
                         "weight": 10, "model": "iris-canary"},
                    ],
                }
            ]
        }  # fmt: skip
        (tmp / "routes.yaml").write_text(yaml.safe_dump(routes))
        router_port = free_port()
        router_env = {"MLROUTER_SIGNING_KEY": "bench-router-signing-key-0123456789"}
        if args.profile:
            router_env["BENCH_ROUTER_PROFILE"] = str(Path(args.profile).resolve())
        router = Proc(
            [PYTHON, *(["-c", PROFILED_ROUTER] if args.profile else ["-m", "mlserving.cli"]), "route",
             "--config", str(tmp / "routes.yaml"), "--host", "127.0.0.1", "--port", str(router_port),
             "--log-level", "warning"],
            tmp / "router.log",
            env=router_env,
        )  # fmt: skip
        stack.callback(router.stop)
        wait_until(lambda: http_ok(f"http://127.0.0.1:{router_port}/v2/health/ready"), timeout=60,
                   message="router")  # fmt: skip

        proxy_pids: dict[str, list[int]] = {"direct": [servers["stable"][1].pid], "router": [router.pid]}
        targets = {
            "direct": f"http://127.0.0.1:{servers['stable'][0]}/v2/models/iris-stable/infer",
            "router": f"http://127.0.0.1:{router_port}/v2/models/iris/infer",
        }
        floor_port = free_port()
        floor = Proc(
            [PYTHON, str(Path(__file__).with_name("floor_proxy.py")), str(servers["stable"][0]),
             str(floor_port), "iris-stable"],
            tmp / "floor.log",
        )  # fmt: skip
        stack.callback(floor.stop)
        wait_until(lambda: http_ok(f"http://127.0.0.1:{floor_port}/v2/models/iris/ready"), timeout=20,
                   message="floor proxy")  # fmt: skip
        targets["floor"] = f"http://127.0.0.1:{floor_port}/v2/models/iris/infer"
        proxy_pids["floor"] = [floor.pid]
        if nginx:
            nginx_port = free_port()
            for sub in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
                (tmp / sub).mkdir()
            conf = tmp / "nginx.conf"
            conf.write_text(
                NGINX_CONF.format(
                    tmp=tmp, port=nginx_port, stable=servers["stable"][0], canary=servers["canary"][0]
                )
            )
            proc = Proc([nginx, "-p", str(tmp), "-c", str(conf), "-g", "daemon off;"], tmp / "nginx.log")
            stack.callback(proc.stop)
            wait_until(lambda: http_ok(f"http://127.0.0.1:{nginx_port}/v2/models/iris/ready"), timeout=20,
                       message="nginx")  # fmt: skip
            targets["nginx"] = f"http://127.0.0.1:{nginx_port}/v2/models/iris/infer"
            proxy_pids["nginx"] = children(proc.pid)
        else:
            print("nginx not found (apt-get install -y nginx): the nginx column is skipped", file=sys.stderr)

        script = tmp / "post.lua"
        script.write_text(WRK_SCRIPT.format(body=body_for("")))
        results: dict[tuple[str, int], tuple[float, float, float]] = {}
        for url in targets.values():  # warm up every path (pools, caches)
            run_wrk(wrk, url, script, 8, 1)
        # Interleaved repetitions; the best run of each target is kept (interference only adds time).
        for repetition in range(args.repeat):
            for connections in args.concurrency:
                for name, url in targets.items():
                    before = cpu_seconds(proxy_pids[name])
                    p50, rps, count = run_wrk(wrk, url, script, connections, args.duration)
                    cpu_us = (cpu_seconds(proxy_pids[name]) - before) / max(count, 1) * 1e6
                    print(f"  run {repetition + 1} {name:7s} c={connections}: p50 {p50:.3f} ms, {rps:,.0f} req/s, "
                          f"{cpu_us:.0f} us CPU/request in {name}", flush=True)  # fmt: skip
                    best = results.get((name, connections))
                    results[(name, connections)] = (
                        min(p50, best[0]) if best else p50,
                        max(rps, best[1]) if best else rps,
                        min(cpu_us, best[2]) if best else cpu_us,
                    )

        print()
        print(f"{'target':8s} {'conc':>4s} {'p50 ms':>8s} {'req/s':>9s} {'p50 - direct':>13s} "
              f"{'req/s vs direct':>16s} {'CPU us/req':>11s}")  # fmt: skip
        for connections in args.concurrency:
            base_p50, base_rps, _ = results[("direct", connections)]
            for name in targets:
                p50, rps, cpu_us = results[(name, connections)]
                print(f"{name:8s} {connections:4d} {p50:8.3f} {rps:9,.0f} {p50 - base_p50:+12.3f}  "
                      f"{rps / base_rps:15.2f} {cpu_us:11.0f}")  # fmt: skip
        if "nginx" in targets:
            print()
            for connections in args.concurrency:
                r_p50, r_rps, _ = results[("router", connections)]
                n_p50, n_rps, _ = results[("nginx", connections)]
                print(
                    f"router vs nginx, c={connections}: overhead {r_p50 - results[('direct', connections)][0]:+.3f} ms"
                    f" vs {n_p50 - results[('direct', connections)][0]:+.3f} ms; throughput ratio {r_rps / n_rps:.2f}"
                )
            for connections in args.concurrency:
                nginx_cpu = results[("nginx", connections)][2]
                ratios = ", ".join(
                    f"{name} {results[(name, connections)][2] / nginx_cpu:.1f}x"
                    for name in ("router", "floor")
                )
                print(f"CPU per request vs nginx, c={connections}: {ratios} (goal for the router: <= 2x)")
        if not args.skip_clients:
            print("\nupstream clients (sequential keep-alive requests to the stable server, in one process):")
            for name, p50, cpu_us in compare_clients(targets["direct"]):
                print(f"  {name:8s} p50 {p50:.3f} ms, client CPU {cpu_us:.0f} us/request")
        print("\n(shared machine: the load generator, proxies and model servers compete for the same cores)")
    if args.profile:  # written when the router stopped
        import pstats

        print(f"\nrouter profile ({args.profile}), by own CPU time:")
        pstats.Stats(args.profile).sort_stats("tottime").print_stats(25)
    return 0


if __name__ == "__main__":
    sys.exit(main())
