"""A model server that hangs (SIGSTOP: alive, accepting connections, never answering) under load.

Router and two real model servers of one variant; ``hey`` keeps 8 requests in flight while one server
is stopped. The per-upstream timeout bounds every request, outlier ejection takes the hung server out
of rotation so only a handful of requests ever wait on it, and each of those failures is counted in
``mlrouter_requests_total`` (what the analysis queries), exactly as the client saw it.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from graph_testing import AFFINE_MODELS, by_hand, rows_request, value_rows, write_affine_model
from router_testing import route, table, variant

from support import require_binary, wait_until
from support.models import RunningServer, serving

pytestmark = [pytest.mark.integration, pytest.mark.faults]

REQUEST_SECONDS = 0.5
CONCURRENCY = 8
LOAD_SECONDS = 6
OUTLIERS = {"consecutiveFailures": 2, "baseEjectionSeconds": 1, "maxEjectionSeconds": 2}


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[list[RunningServer]]:
    weights, bias = AFFINE_MODELS["shift"]
    model = write_affine_model(tmp_path / "shift.onnx", weights, bias)
    with serving(tmp_path, model, name="shift") as one, serving(tmp_path, model, name="shift") as two:
        yield [one, two]


def hey(url: str, body: Path, seconds: float) -> subprocess.Popen[str]:
    argv = [require_binary("hey"), "-z", f"{seconds}s", "-c", str(CONCURRENCY), "-t", "10", "-m", "POST"]
    argv += ["-T", "application/json", "-D", str(body), url]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def parse_hey(report: str) -> tuple[dict[int, int], float, float]:
    """Status counts, p99 and slowest latency (seconds) of a ``hey`` report."""
    statuses = {int(code): int(n) for code, n in re.findall(r"\[(\d{3})\]\s+(\d+) responses", report)}
    p99 = re.search(r"99% in ([0-9.]+) secs", report)
    slowest = re.search(r"Slowest:\s+([0-9.]+) secs", report)
    assert p99 and slowest and statuses, report
    return statuses, float(p99.group(1)), float(slowest.group(1))


def served(server: RunningServer) -> float:
    """Inference requests the server answered, from its own metrics."""
    text = httpx.get(f"{server.url}/metrics", timeout=5).text
    pattern = r'^mlserving_requests_total\{[^}]*code="200"[^}]*\} ([0-9.e+]+)$'
    return sum(float(v) for v in re.findall(pattern, text, flags=re.MULTILINE))


def test_hung_server_is_bounded_by_timeout_and_ejected(servers, start_router, tmp_path):
    hung, healthy = servers
    spec = route(
        "shift", "shift",
        variants=[variant("stable", hung.url, healthy.url, weight=1)],
        timeouts={"connectSeconds": 1, "requestSeconds": REQUEST_SECONDS},
        outlierDetection=OUTLIERS,
    )  # fmt: skip
    router = start_router(table(spec))
    url = f"{router.url}/v2/models/shift/infer"
    body = tmp_path / "body.json"
    body.write_text(json.dumps(rows_request([1.0, 2.0])))
    for _ in range(20):  # both servers answer before the fault
        assert httpx.post(url, content=body.read_bytes(), timeout=5).status_code == 200
    assert served(hung) > 0 and served(healthy) > 0
    before = {
        code: router.metric("mlrouter_requests_total", variant="stable", code=code) for code in ("504",)
    }

    load = hey(url, body, LOAD_SECONDS)
    try:
        wait_until(lambda: router.metric("mlrouter_requests_total") > 200, timeout=10, message="load running")
        os.kill(hung.proc.pid, signal.SIGSTOP)
        report, _ = load.communicate(timeout=LOAD_SECONDS + 30)
    finally:
        os.kill(hung.proc.pid, signal.SIGCONT)
        if load.poll() is None:
            load.kill()
    statuses, p99, slowest = parse_hey(report)
    timeouts = statuses.get(504, 0)
    ejections = router.metric("mlrouter_upstream_ejections_total", route="shift", variant="stable")
    print(f"\nhung upstream under load: {statuses}, p99 {p99 * 1000:.1f} ms, slowest {slowest:.3f} s")
    assert set(statuses) <= {200, 504}, report
    assert timeouts >= 1 and ejections >= 1, "the hung server was reached, timed out and ejected"
    # the timeout bounds every request; ejection keeps the stuck ones too few to reach the p99
    assert slowest < REQUEST_SECONDS + 0.5, report
    assert p99 < REQUEST_SECONDS / 2, report
    # after an ejection only one probe at a time reaches the hung server: without ejection the
    # stuck requests would repeat every timeout for the whole run
    assert timeouts <= CONCURRENCY + ejections, (timeouts, ejections)
    counted = router.metric("mlrouter_requests_total", variant="stable", code="504") - before["504"]
    assert counted == timeouts, "each failure is counted under the variant, as the client saw it"

    # resumed: a probe finds it answering and it is back in rotation, without a restart
    answered = served(hung)
    wait_until(
        lambda: (
            httpx.post(url, content=body.read_bytes(), timeout=5).status_code == 200
            and served(hung) > answered
        ),
        timeout=15,
        message="the resumed server serves again",
    )
    answer = httpx.post(url, content=body.read_bytes(), timeout=5)
    assert value_rows(answer.json()) == [by_hand("shift", [1.0, 2.0])]
    assert router.proc.alive()
