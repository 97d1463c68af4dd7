"""Upstream failures, bad input, hot reload and socket hygiene of a real router process."""

from __future__ import annotations

import os
import subprocess
import threading
import time

import httpx
import pytest
from router_testing import route, table, variant

from support import free_port, require_binary, wait_until

pytestmark = pytest.mark.integration

INFER = {"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1.0]}]}


def post(url: str, **kwargs) -> httpx.Response:
    return httpx.post(url, timeout=15, **{"json": INFER, **kwargs})


def test_upstream_failures_become_502_and_504_and_the_router_keeps_serving(start_upstream, start_router):
    good = start_upstream("good", "--label", "7")
    garbage = start_upstream("garbage", mode="tcp-garbage")
    badjson = start_upstream("badjson", mode="badjson")
    hang = start_upstream("hang", mode="tcp-hang")
    dead = f"http://127.0.0.1:{free_port()}"

    def single(model: str, *upstreams, **extra) -> dict:
        return route(name=model, model=model, variants=[variant("v", *upstreams, weight=1, **extra)])

    router = start_router(
        table(
            single("good", good),
            single("dead", dead),
            single("garbage", garbage),
            single("badjson", badjson),
            single("hang", hang, timeouts={"connectSeconds": 1, "requestSeconds": 0.5}),
            single("retry", dead, good),  # first endpoint refuses: the retry goes to the other one
        )
    )
    for model, status, fragment in [
        ("dead", 502, "connection failed"),
        ("garbage", 502, "invalid upstream response"),
        ("badjson", 502, "invalid JSON"),
        ("hang", 504, "did not answer within 0.5 s"),
    ]:
        response = post(f"{router.url}/v2/models/{model}/infer")
        assert response.status_code == status, (model, response.text)
        assert fragment in response.json()["error"], (model, response.text)
        assert response.headers["x-mlrollouts-variant"] == "v"
    for _ in range(6):  # both endpoints in turn come first; every request succeeds
        response = post(f"{router.url}/v2/models/retry/infer")
        assert response.status_code == 200 and response.json()["outputs"][0]["data"] == [7]
    assert router.metric("mlrouter_upstream_retries_total", route="retry", variant="v") >= 3
    assert router.metric("mlrouter_requests_total", route="hang", variant="v", code="504") == 1
    assert post(f"{router.url}/v2/models/good/infer").status_code == 200
    assert router.proc.alive()


def test_keep_alive_connections_closed_by_the_upstream_are_not_a_failure(start_upstream, start_router):
    upstream = start_upstream("brief", "--keep-alive", "0.2")
    router = start_router(table(route(variants=[variant("v", upstream, weight=1)])))
    for _ in range(4):
        assert post(f"{router.url}/v2/models/iris/infer").status_code == 200
        time.sleep(0.4)  # idle longer than the upstream keeps connections open
    assert router.metric("mlrouter_requests_total", route="iris", variant="v", code="200") == 4


def test_bad_requests_get_json_errors(start_upstream, start_router):
    good = start_upstream("good")
    router = start_router(
        table(route(variants=[variant("v", good, weight=1)])), extra=("--max-body-bytes", "1048576")
    )
    ten_mb = b"0" * (10 * 1024 * 1024)
    response = post(f"{router.url}/v2/models/iris/infer", content=ten_mb, json=None)
    assert response.status_code == 413 and "exceeds the limit of 1048576 bytes" in response.json()["error"]

    def chunks():
        for _ in range(10):
            yield b"0" * (1024 * 1024)

    chunked = post(f"{router.url}/v2/models/iris/infer", content=chunks(), json=None)
    assert chunked.status_code == 413 and "error" in chunked.json()
    assert httpx.get(f"{router.url}/nowhere").status_code == 404
    assert post(f"{router.url}/v2/models/iris/infer").status_code == 200
    assert router.metric("mlrouter_requests_total", route="iris", variant="v", code="413") == 2


def test_router_starts_unready_on_a_bad_table_and_recovers(start_upstream, start_router, tmp_path):
    good = start_upstream("good")
    router = start_router("routes: [{name: r, model: iris, variants: []}]")
    assert httpx.get(f"{router.url}/v2/health/ready").status_code == 503
    assert "routes.0.variants" in router.proc.output()
    router.write_table(table(route(variants=[variant("v", good, weight=1)])))
    wait_until(lambda: httpx.get(f"{router.url}/v2/health/ready").status_code == 200, timeout=5)


def test_hot_reload_applies_within_a_second_keeps_in_flight_requests_and_rejects_bad_tables(
    start_upstream, start_router
):
    slow = start_upstream("slow", "--delay", "1.5", "--label", "1")
    fast = start_upstream("fast", "--label", "2")
    router = start_router(table(route(variants=[variant("old", slow, weight=1)])))
    in_flight: list[httpx.Response] = []
    threads = [
        threading.Thread(target=lambda: in_flight.append(post(f"{router.url}/v2/models/iris/infer")))
        for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    wait_until(lambda: slow.stats()["infer"] >= 4, timeout=5, message="slow requests in flight")
    applied = router.metric("mlrouter_table_reloads_total", result="applied")
    changed = time.monotonic()
    router.write_table(table(route(variants=[variant("new", fast, weight=1)])))
    # watch the reload counter, not requests: a request polled too early would itself wait 1.5 s on "old"
    wait_until(
        lambda: router.metric("mlrouter_table_reloads_total", result="applied") > applied,
        timeout=5,
        interval=0.02,
    )
    assert time.monotonic() - changed < 1.0
    assert post(f"{router.url}/v2/models/iris/infer").headers["x-mlrollouts-variant"] == "new"
    for thread in threads:
        thread.join()
    assert [r.status_code for r in in_flight] == [200] * 4
    assert {r.headers["x-mlrollouts-variant"] for r in in_flight} == {"old"}

    router.write_table(
        "routes: [{name: r, model: iris, variants: [{name: x, upstreams: ['http://a'], weight: 0}]}]"
    )
    wait_until(lambda: router.metric("mlrouter_table_reloads_total", result="rejected") == 1, timeout=5)
    assert "positive total" in router.proc.output()
    assert post(f"{router.url}/v2/models/iris/infer").headers["x-mlrollouts-variant"] == "new"


def open_sockets(pid: int) -> int:
    fd_dir = f"/proc/{pid}/fd"
    count = 0
    for fd in os.listdir(fd_dir):
        try:
            if os.readlink(f"{fd_dir}/{fd}").startswith("socket:"):
                count += 1
        except OSError:
            pass
    return count


@pytest.mark.slow
def test_no_sockets_leak_after_10k_requests_to_failing_upstreams(start_upstream, start_router):
    hey = require_binary("hey")
    garbage = start_upstream("garbage", mode="tcp-garbage")
    badjson = start_upstream("badjson", mode="badjson")
    hang = start_upstream("hang", mode="tcp-hang")
    dead = f"http://127.0.0.1:{free_port()}"
    variants = [
        variant("dead", dead, weight=1),
        variant("garbage", garbage, weight=1),
        variant("badjson", badjson, weight=1),
        variant("hang", hang, weight=0.3, timeouts={"connectSeconds": 1, "requestSeconds": 0.05}),
    ]
    router = start_router(table(route(variants=variants)))
    post(f"{router.url}/v2/models/iris/infer")
    baseline = open_sockets(router.proc.pid)
    result = subprocess.run(
        [
            hey,
            "-n",
            "10000",
            "-c",
            "32",
            "-m",
            "POST",
            "-d",
            '{"inputs": []}',
            f"{router.url}/v2/models/iris/infer",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    # hey's histogram also prints counts in brackets: read the status codes from their own section
    statuses = result.stdout.split("Status code distribution:")[-1]
    assert "[502]" in statuses and "[504]" in statuses, result.stdout
    assert "[200]" not in statuses
    codes = {c: router.metric("mlrouter_requests_total", route="iris", code=c) for c in ("502", "504")}
    assert sum(codes.values()) >= 9_984, (codes, result.stdout)
    # Once the client is gone, the router holds no more sockets than before the storm.
    wait_until(lambda: open_sockets(router.proc.pid) <= baseline + 2, timeout=10, message="sockets released")
    assert post(f"{router.url}/v2/models/iris/infer").status_code in (502, 504)
    assert router.proc.alive()
