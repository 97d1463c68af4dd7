"""CloudEvent delivery to a real HTTP sink on a loopback port."""

from __future__ import annotations

import asyncio
import statistics
import time

import orjson
import pytest
from cloudevents.core.bindings.http import HTTPMessage, from_http
from cloudevents.core.formats.json import JSONFormat
from graph_fakes import Components, compiled, model_node, request, sample_value, tensor, weighted_row_sum
from http_servers import Sink, closed_port
from prometheus_client import CollectorRegistry

from mlserving.router.graph.events import EventPublisher
from mlserving.router.graph.executor import run_graph
from mlserving.router.graph.metrics import GraphMetrics
from mlserving.router.graph.model import Events

RESPONSE = {"model_name": "credit", "id": "credit.graph.1.abc.sig", "outputs": [tensor("score", [0.9, 0.2])]}
INPUTS = [tensor("input", [1.0, 2.0], [2, 1])]


@pytest.fixture
async def sink():
    server = await Sink().start()
    yield server
    await server.stop()


def publisher(url: str, registry: CollectorRegistry | None = None, **spec) -> EventPublisher:
    metrics = GraphMetrics(registry) if registry is not None else None
    return EventPublisher("credit", Events(sink=url, **spec), metrics)


async def until(condition, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.005)


def parsed(received):
    return from_http(HTTPMessage(received.headers, received.body), JSONFormat())


async def test_structured_mode_posts_a_cloudevent_with_the_result(sink):
    events = publisher(sink.url)
    assert events.submit(RESPONSE, INPUTS)
    await until(lambda: events.delivered == 1)
    await events.stop()
    received = sink.received[0]
    assert received.headers["content-type"] == "application/cloudevents+json"
    event = parsed(received)
    assert event.get_type() == "io.mlrollouts.graph.result"
    assert event.get_source() == "/mlrollouts/graphs/credit"
    assert event.get_id() == RESPONSE["id"]
    assert event.get_subject() == "credit"
    assert event.get_data() == RESPONSE  # inputs only when asked for


async def test_binary_mode_puts_the_attributes_in_headers_and_the_data_in_the_body(sink):
    events = publisher(
        sink.url, mode="binary", type="com.bank.credit-score", source="/bank/scoring", include_inputs=True
    )
    events.submit(RESPONSE, INPUTS)
    await until(lambda: events.delivered == 1)
    await events.stop()
    received = sink.received[0]
    assert received.headers["ce-type"] == "com.bank.credit-score"
    assert received.headers["ce-source"] == "/bank/scoring"
    assert received.headers["ce-id"] == RESPONSE["id"]
    assert received.headers["ce-specversion"] == "1.0"
    assert received.headers["content-type"] == "application/json"
    assert orjson.loads(received.body) == {**RESPONSE, "inputs": INPUTS}


async def test_the_filter_sends_only_matching_results(sink):
    events = publisher(sink.url, filter={"output": "score", "op": "ge", "value": 0.8})
    assert events.submit(RESPONSE, INPUTS)  # row 0 scores 0.9
    low = {**RESPONSE, "id": "low", "outputs": [tensor("score", [0.1, 0.7])]}
    assert not events.submit(low, INPUTS)
    await until(lambda: events.delivered == 1)
    await events.stop()
    assert [parsed(r).get_id() for r in sink.received] == [RESPONSE["id"]]
    assert events.dropped == 0


async def test_a_slow_sink_does_not_slow_submit():
    slow = await Sink(delay=0.2).start()
    try:
        events = publisher(slow.url, concurrency=2)
        timings = []
        for index in range(200):
            started = time.perf_counter()
            events.submit({**RESPONSE, "id": f"e{index}"}, INPUTS)
            timings.append(time.perf_counter() - started)
            await asyncio.sleep(0)
        assert statistics.median(timings) < 0.0001  # well under 0.1 ms, against 200 ms per delivery
        assert events.queued > 150  # still waiting for the sink
        await until(lambda: events.delivered >= 2)
        assert not any(r.body == b"" for r in slow.received)
        await events.stop(drain_seconds=0)
    finally:
        await slow.stop()


async def test_graph_latency_does_not_depend_on_a_slow_sink():
    slow = await Sink(delay=0.2).start()
    components = Components()
    components.add("a", weighted_row_sum(1), delay=0.001)
    plain = compiled({"root": "a", "nodes": [model_node("a")]})
    with_events = compiled({"root": "a", "nodes": [model_node("a")], "events": {"sink": slow.url}})
    body = request(tensor("input", [1.0, 2.0], [1, 2]))

    async def p50(graph) -> float:
        timings = []
        for _ in range(150):
            started = time.perf_counter()
            status, _, _ = await run_graph(graph, body, components)
            assert status == 200
            timings.append(time.perf_counter() - started)
        return statistics.median(timings)

    try:
        await p50(plain)  # warm up
        baseline, delivering = await p50(plain), await p50(with_events)
        assert with_events.events is not None and with_events.events.queued > 100
        assert delivering - baseline < 0.0005, (baseline, delivering)
        await with_events.events.stop(drain_seconds=0)
    finally:
        await slow.stop()


async def test_a_full_queue_drops_and_counts():
    slow = await Sink(delay=0.5).start()
    registry = CollectorRegistry()
    try:
        events = publisher(slow.url, registry, queue_size=3, concurrency=1)
        accepted = [events.submit({**RESPONSE, "id": f"e{i}"}, INPUTS) for i in range(10)]
        assert accepted == [True] * 3 + [False] * 7
        assert events.dropped == 7
        assert sample_value(registry, "mlgraph_events_total", graph="credit", outcome="dropped") == 7
        await until(lambda: len(slow.received) == 1)  # one in flight at the sink, two still queued
        await events.stop(drain_seconds=0.05)
        assert (events.delivered, events.dropped) == (0, 10)
        assert sample_value(registry, "mlgraph_events_total", graph="credit", outcome="dropped") == 10
    finally:
        await slow.stop()


async def test_transient_failures_are_retried_with_the_same_event_id(sink):
    registry = CollectorRegistry()
    sink.statuses = [503, 429]
    events = publisher(sink.url, registry, initial_backoff_seconds=0.01)
    events.submit(RESPONSE, INPUTS)
    await until(lambda: events.delivered == 1)
    await events.stop()
    assert len(sink.received) == 3
    assert {parsed(r).get_id() for r in sink.received} == {RESPONSE["id"]}
    assert (events.retried, events.dropped) == (2, 0)
    assert sample_value(registry, "mlgraph_events_total", graph="credit", outcome="retried") == 2
    assert sample_value(registry, "mlgraph_events_total", graph="credit", outcome="delivered") == 1


async def test_a_refusing_sink_is_not_retried(sink):
    sink.statuses = [400]
    events = publisher(sink.url, initial_backoff_seconds=0.01)
    events.submit(RESPONSE, INPUTS)
    await until(lambda: events.dropped == 1)
    await events.stop()
    assert (len(sink.received), events.retried, events.delivered) == (1, 0, 0)


async def test_an_unreachable_sink_is_retried_then_dropped():
    registry = CollectorRegistry()
    events = publisher(
        f"http://127.0.0.1:{closed_port()}/events", registry, max_attempts=3, initial_backoff_seconds=0.01
    )
    started = time.perf_counter()
    events.submit(RESPONSE, INPUTS)
    await until(lambda: events.dropped == 1)
    await events.stop()
    assert events.retried == 2 and time.perf_counter() - started >= 0.01 / 2 + 0.02 / 2
    assert sample_value(registry, "mlgraph_events_total", graph="credit", outcome="dropped") == 1


async def test_stop_delivers_what_is_queued_within_the_drain_time():
    sink = await Sink(delay=0.02).start()
    try:
        events = publisher(sink.url, concurrency=1)
        for index in range(5):
            events.submit({**RESPONSE, "id": f"e{index}"}, INPUTS)
        await events.stop(drain_seconds=5)
        assert events.delivered == 5 and events.dropped == 0
        assert [parsed(r).get_id() for r in sink.received] == [f"e{i}" for i in range(5)]
        assert not events.submit(RESPONSE, INPUTS)  # stopped: counted as dropped
        assert events.dropped == 1
    finally:
        await sink.stop()


async def test_a_graph_delivers_its_results_as_events(sink):
    components = Components()
    components.add("a", weighted_row_sum(2), variant="canary")
    graph = compiled({"root": "a", "nodes": [model_node("a")], "events": {"sink": sink.url}})
    status, body, _ = await run_graph(
        graph, request(tensor("input", [1.0, 2.0], [1, 2])), components, response_id="rid-1"
    )
    assert status == 200
    assert graph.events is not None
    await until(lambda: graph.events.delivered == 1)
    await graph.events.stop()
    event = parsed(sink.received[0])
    assert event.get_id() == "rid-1"
    assert event.get_data() == orjson.loads(body)
    assert event.get_data()["parameters"]["graph"]["components"]["a"]["variant"] == "canary"
