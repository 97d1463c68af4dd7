"""Benchmark: memory of the model server after a long load, and of its caches of recent ids.

    .venv/bin/python tests/bench/bench_server_memory.py [--requests 300000] [--ids generated|given]
        [--feedback] [--model classifier|regressor] [--caches-only]

Server: ``mlserving serve`` with a model of ``support.models`` (the iris LogisticRegression, primary
output ``label``; or the diabetes Ridge, primary output ``value``), default settings (a cache of
100,000 recent response ids). Load: ``wrk`` (one thread, 8 keep-alive connections) posting
single-row V2 requests until ``--requests`` inferences are answered:

- ``--ids generated``: requests without an ``id``, the server generates one per response;
- ``--ids given``: every request carries its own id shaped like a router's
  (``route.variant.time.nonce.signature``, 68 characters), as forwarded by the router;
- ``--feedback`` (with ``--ids given``): after each inference a reward for the response 100 earlier,
  so the cache of credited feedback fills too.

Printed: the RSS of the server (``VmRSS``) when ready, after a warm-up of 2,000 requests and after
the load, and the count of answers other than 200 (which must be 0). ``--caches-only`` instead
fills the two caches in this process (``ResponseIds`` and ``CreditedIds``) and prints what
tracemalloc counts for them at their fullest, which tells the caches' share of the growth.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.append(str(ROOT / "serving_image"))

from support.models import serving, train_iris_models  # noqa: E402

CONNECTIONS = 8
WARMUP = 2_000
FEEDBACK_LAG = 100  # a reward is sent for the response this many inferences earlier
SIGNATURE = "q1w2e3r4t5y6u7i8o9p0as"  # 22 characters, as a router's 16-byte signature

WRK_SCRIPT = """
local total = {total}
local given = {given}
local feedback = {feedback}
local offset = {offset}
local body = '{body}'
local sent = 0
local answered = 0
local failed = 0
local turn = 0

local function id(n)
  return string.format("iris.stable.1700000000.%016x.{signature}", n + offset)
end

request = function()
  turn = turn + 1
  if feedback and turn % 2 == 0 and sent > {lag} + {connections} then
    local reward = '{{"id": "' .. id(sent - {lag}) .. '", "reward": 1}}'
    return wrk.format("POST", "/v2/models/{model}/feedback", {{["Content-Type"] = "application/json"}}, reward)
  end
  sent = sent + 1
  if given then
    return wrk.format("POST", "/v2/models/{model}/infer", nil, '{{"id": "' .. id(sent) .. '", ' .. body:sub(2))
  end
  return wrk.format("POST", "/v2/models/{model}/infer", nil, body)
end

response = function(status, headers, body)
  answered = answered + 1
  if status ~= 200 then
    failed = failed + 1
    if failed == 1 then
      io.write("first failure: ", status, " ", body, "\\n")
    end
  end
  if answered >= total * (feedback and 2 or 1) then
    io.write("answered ", answered, " failed ", failed, "\\n")
    io.flush()
    os.exit(0)  -- thread:stop() would leave wrk waiting for its whole duration
  end
end
"""


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    raise RuntimeError(f"no VmRSS for process {pid}")


def run_wrk(
    url: str, work: Path, body: str, model: str, total: int, *, given: bool, feedback: bool, offset: int
) -> tuple[float, int]:
    """Drive ``total`` inferences (and as many rewards with ``feedback``): (seconds, answers other than 200)."""
    script = work / f"load-{offset}.lua"
    script.write_text(
        WRK_SCRIPT.format(
            total=total,
            given=str(given).lower(),
            feedback=str(feedback).lower(),
            offset=offset,
            body=body,
            model=model,
            lag=FEEDBACK_LAG,
            signature=SIGNATURE,
            connections=CONNECTIONS,
        )
    )
    started = time.perf_counter()
    headers = ["-H", "Content-Type: application/json"]
    argv = ["wrk", "-t1", f"-c{CONNECTIONS}", "-d3600s", *headers, "-s", str(script), f"{url}/"]
    # A Lua error leaves wrk running plain GETs for its whole duration: give up well before.
    limit = 120 + total / 200
    out = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=limit).stdout
    elapsed = time.perf_counter() - started
    counts = re.search(r"answered (\d+) failed (\d+)", out)
    if counts is None:
        raise RuntimeError(f"wrk stopped before the load was answered:\n{out}")
    if int(counts.group(2)):
        print(re.search(r"first failure: .*", out).group(0), file=sys.stderr)  # type: ignore[union-attr]
    return elapsed, int(counts.group(2))


def bench_server(args: argparse.Namespace) -> None:
    import json

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        models = train_iris_models(work / "models")
        if args.model == "classifier":
            path, rows = models.classifier_skops, models.features[:1].tolist()
        else:
            path, rows = models.regressor_skops, [[0.01] * 10]
        flat = [v for row in rows for v in row]
        body = json.dumps(
            {"inputs": [{"name": "input", "shape": [1, len(flat)], "datatype": "FP64", "data": flat}]}
        )
        given, feedback = args.ids == "given", args.feedback
        with serving(work, path, name="m", extra=["--log-level", "WARNING"]) as server:
            pid = server.proc.pid
            ready = rss_mb(pid)
            run_wrk(server.url, work, body, "m", WARMUP, given=given, feedback=feedback, offset=0)
            warm = rss_mb(pid)
            seconds, errors = run_wrk(
                server.url, work, body, "m", args.requests, given=given, feedback=feedback, offset=10**9
            )
            after = rss_mb(pid)
    load = f"{args.requests:,} inferences ({args.ids} ids{', each with a reward' if feedback else ''})"
    print(f"model: {args.model}; load: {load} in {seconds:.0f} s, answers other than 200: {errors}")
    print(f"RSS ready {ready:.1f} MB, after warm-up {warm:.1f} MB, after the load {after:.1f} MB")
    print(f"growth over the load: {after - warm:+.1f} MB")


def bench_caches(args: argparse.Namespace) -> None:
    from mlserving.feedback import CreditedIds
    from mlserving.server.ids import ResponseIds

    def fullest(fill: Callable[[], object]) -> float:
        tracemalloc.start()
        kept = fill()
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        del kept
        return peak / 1e6

    def response_ids(given: bool, prediction: Callable[[int], object]) -> object:
        ids = ResponseIds(None, 100_000)
        for n in range(args.requests):
            response_id = f"iris.stable.1700000000.{n:016x}.{SIGNATURE}" if given else ids.new()
            ids.remember(response_id, prediction(n))
        return ids

    def credited() -> object:
        seen = CreditedIds(20_000)
        for n in range(args.requests):
            seen.add(f"reward:iris.stable.1700000000.{n:016x}.{SIGNATURE}")
        return seen

    print(f"tracemalloc peak while remembering {args.requests:,} ids (cache sizes 100,000 and 20,000):")
    print(
        f"  ResponseIds, generated ids, int label:   {fullest(lambda: response_ids(False, lambda n: n % 3)):6.2f} MB"
    )
    print(
        f"  ResponseIds, generated ids, float value: {fullest(lambda: response_ids(False, lambda n: n / 7)):6.2f} MB"
    )
    print(
        f"  ResponseIds, router ids, int label:      {fullest(lambda: response_ids(True, lambda n: n % 3)):6.2f} MB"
    )
    print(f"  CreditedIds, router ids:                 {fullest(credited):6.2f} MB")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=300_000)
    parser.add_argument("--ids", choices=("generated", "given"), default="generated")
    parser.add_argument("--feedback", action="store_true", help="a reward after each inference (--ids given)")
    parser.add_argument("--model", choices=("classifier", "regressor"), default="classifier")
    parser.add_argument("--caches-only", action="store_true", help="tracemalloc of the caches, in process")
    args = parser.parse_args()
    if args.feedback and args.ids != "given":
        parser.error("--feedback needs --ids given")
    if args.caches_only:
        bench_caches(args)
    else:
        bench_server(args)


if __name__ == "__main__":
    main()
