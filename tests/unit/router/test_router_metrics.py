"""The router's request count and latency histogram, kept in plain numbers, expose exactly what a
``prometheus_client`` counter and histogram fed the same requests expose."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from mlserving.router.metrics import LATENCY_BUCKETS, RouterMetrics

REQUESTS = [
    ("iris", "stable", 200, 0.0004),
    ("iris", "stable", 200, 0.0005),  # on a bound: counted in that bucket (le is inclusive)
    ("iris", "stable", 200, 0.0031),
    ("iris", "canary", 502, 0.2),
    ("iris", "stable", 504, 31.0),  # above the last bound: +Inf only
    ("credit", "a", 200, 0.0),
    ("iris", "stable", 200, 0.75),
]


def reference(requests) -> bytes:
    registry = CollectorRegistry()
    count = Counter(
        "mlrouter_requests",
        "Requests answered, by route, serving variant and status code.",
        ["route", "variant", "code"],
        registry=registry,
    )
    duration = Histogram(
        "mlrouter_request_duration_seconds",
        "Time from request received to response sent.",
        ["route", "variant"],
        buckets=LATENCY_BUCKETS,
        registry=registry,
    )
    for route, variant, code, seconds in requests:
        count.labels(route, variant, str(code)).inc()
        duration.labels(route, variant).observe(seconds)
    return generate_latest(registry)


def test_the_tally_exposes_what_a_prometheus_counter_and_histogram_would():
    metrics = RouterMetrics()
    for request in REQUESTS:
        metrics.observe_request(*request)
    ours = [
        line
        for line in metrics.exposition().decode().splitlines()
        if "mlrouter_requests" in line or "mlrouter_request_duration" in line
    ]
    assert sorted(ours) == sorted(reference(REQUESTS).decode().splitlines())
    assert not any("_created" in line for line in ours)
