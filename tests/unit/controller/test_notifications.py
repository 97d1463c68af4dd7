"""Notifications: what a pass has to tell, the two payloads, and background delivery with retries
against a real local HTTP sink."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime

import pytest
from aiohttp import web

from mlrollouts.controller.notifications import (
    NOTIFICATIONS,
    NotificationSink,
    Notifier,
    SinkFormat,
    cloudevent,
    notifications_for,
    parse_sinks,
    slack_message,
)
from mlrollouts.core.events import Event

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
BODY = {
    "apiVersion": "mlrollouts.io/v1alpha1",
    "kind": "ModelDeployment",
    "metadata": {"name": "fraud", "namespace": "ml"},
    "status": {"phase": "Progressing", "stableRevision": "aaa", "candidateRevision": "bbb"},
}


def test_a_promotion_pass_tells_the_phase_change_and_the_promotion():
    status = {"phase": "Healthy", "stableRevision": "bbb", "message": "revision bbb promoted"}
    events = [Event.normal("WeightChanged", "100%"), Event.normal("Promoted", "revision bbb promoted")]
    notes = notifications_for(BODY, status, events, NOW)
    assert [n.reason for n in notes] == ["PhaseChanged", "Promoted"]
    assert notes[0].previous_phase == "Progressing" and notes[0].phase == "Healthy"
    assert notes[1].details == {"stableRevision": "bbb"}


def test_a_pass_without_news_tells_nothing():
    status = {"phase": "Progressing"}
    assert notifications_for(BODY, status, [Event.normal("StepStarted", "step 2/3")], NOW) == []


def test_cloudevent_is_structured_cloudevents_1_0():
    (note,) = notifications_for(BODY, BODY["status"], [Event.warning("RolledBack", "bbb rolled back")], NOW)
    event = cloudevent(note)
    for attribute in ("specversion", "id", "source", "type", "time", "datacontenttype", "data"):
        assert event[attribute], attribute
    assert event["specversion"] == "1.0"
    assert event["type"] == "io.mlrollouts.modeldeployment.rolledBack"
    assert event["source"] == "/apis/mlrollouts.io/v1alpha1/namespaces/ml/modeldeployments/fraud"
    assert event["time"] == "2026-01-02T03:04:05Z"
    assert event["data"]["message"] == "bbb rolled back"
    assert slack_message(note) == {"text": "ModelDeployment ml/fraud: RolledBack: bbb rolled back"}


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ('[{"url": "http://x"}]', "[0].name"),
        ('[{"name": "a", "url": "ftp://x"}]', "[0].url"),
        ('[{"name": "a", "url": "http://x", "format": "Teams"}]', "[0].format"),
        ('[{"name": "a", "url": "http://x", "reasons": ["Nope"]}]', "[0].reasons"),
        ('[{"name": "a", "url": "http://x", "retries": 3}]', "[0].retries"),
        ('[{"name": "a", "url": "http://x"}, {"name": "a", "url": "http://y"}]', "unique"),
        ("{", "not JSON"),
    ],
)
def test_bad_sinks_are_refused_naming_the_field(text, field):
    with pytest.raises(ValueError) as exc:
        parse_sinks(text)
    assert str(exc.value).startswith("MLROLLOUTS_NOTIFICATIONS") and field in str(exc.value)


def test_sinks_parse():
    (sink,) = parse_sinks(
        '[{"name": "chat", "url": "https://hooks.example/x", "format": "Slack", "reasons": ["Promoted"]}]'
    )
    assert sink.format is SinkFormat.SLACK and sink.wants("Promoted") and not sink.wants("PhaseChanged")


class Sink:
    """A local HTTP sink that fails its first ``failures`` requests with 503."""

    def __init__(self, failures: int = 0) -> None:
        self.failures = failures
        self.received: list[tuple[str, dict]] = []

    async def handle(self, request: web.Request) -> web.Response:
        if self.failures > 0:
            self.failures -= 1
            return web.Response(status=503)
        self.received.append((request.content_type, json.loads(await request.text())))
        return web.Response(status=202)

    async def __aenter__(self) -> str:
        app = web.Application()
        app.router.add_post("/", self.handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return f"http://127.0.0.1:{port}/"

    async def __aexit__(self, *_: object) -> None:
        await self.runner.cleanup()


def count(sink: str, outcome: str) -> float:
    return NOTIFICATIONS.labels(sink, outcome)._value.get()


async def test_delivery_retries_then_succeeds_and_counts():
    sink = Sink(failures=2)
    async with sink as url:
        notifier = Notifier([NotificationSink("retrying", url)], first_backoff=0.01)
        notifier.start()
        before = count("retrying", "delivered")
        notifier.submit(notifications_for(BODY, {"phase": "Healthy"}, [], NOW))
        await asyncio.wait_for(notifier.drain(), 5)
        await notifier.close()
    assert len(sink.received) == 1
    content_type, event = sink.received[0]
    assert content_type == "application/cloudevents+json" and event["data"]["phase"] == "Healthy"
    assert count("retrying", "delivered") == before + 1


async def test_an_unreachable_sink_is_dropped_after_retries_without_holding_the_caller():
    sink = Sink(failures=100)
    async with sink as url:
        notifier = Notifier([NotificationSink("down", url, SinkFormat.SLACK)], first_backoff=0.01)
        notifier.start()
        before = count("down", "dropped")
        loop = asyncio.get_running_loop()
        started = loop.time()
        notifier.submit(notifications_for(BODY, {"phase": "Degraded"}, [], NOW))
        assert loop.time() - started < 0.05  # submitting never waits for the sink
        await asyncio.wait_for(notifier.drain(), 5)
        await notifier.close()
    assert sink.received == [] and sink.failures == 96  # four attempts, then given up
    assert count("down", "dropped") == before + 1


def test_an_experiment_conclusion_names_the_winner():
    body = {
        "kind": "Experiment",
        "metadata": {"name": "ab", "namespace": "ml"},
        "status": {"phase": "Running"},
    }
    status = {"phase": "Concluded", "winner": {"variant": "b"}, "message": "b wins"}
    notes = notifications_for(body, status, [Event.normal("Concluded", "b wins (p=0.01)")], NOW)
    assert [n.reason for n in notes] == ["PhaseChanged", "Concluded"]
    event = cloudevent(notes[1])
    assert event["type"] == "io.mlrollouts.experiment.concluded"
    assert event["data"]["winner"] == {"variant": "b"}
