"""The learner's HTTP API in-process: logs, feedback, health, status and metrics."""

from __future__ import annotations

import asyncio
import copy
import time
from collections.abc import AsyncIterator

import httpx
import pytest
from learning_testing import KEY, fitted_sgd_classifier
from prometheus_client.parser import text_string_to_metric_families

from mlserving.learning.location import StorageLocation
from mlserving.learning.pipeline import LearningPipeline, PipelineConfig
from mlserving.learning.service import create_app


@pytest.fixture
async def client(tmp_path, iris) -> AsyncIterator[httpx.AsyncClient]:
    """The app over an in-process transport; the pipeline runs as the app's lifespan would run it."""
    config = PipelineConfig(
        model_name="iris", batch_size=8, snapshot_every=16, flush_interval=0.01, unknown_id_wait=0.0
    )
    pipeline = LearningPipeline(
        config,
        initial_estimator=copy.deepcopy(fitted_sgd_classifier(iris)),
        location=StorageLocation((tmp_path / "store").as_uri()),
        key=KEY,
    )
    app = create_app(pipeline, max_body_bytes=64 * 1024)
    await pipeline.start()
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://learner") as test_client:
            await until(lambda: pipeline.ready)
            yield test_client
    finally:
        await pipeline.stop()


async def until(predicate, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not await _value(predicate()):
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def _value(value):
    return await value if asyncio.iscoroutine(value) else value


def record(index: int, iris, **extra) -> dict:
    return {"id": f"r{index}", "features": iris.x[index].tolist(), "prediction": 0, "snapshot": 0, **extra}


async def status_of(client: httpx.AsyncClient, field: str, at_least: int) -> bool:
    value = (await client.get("/v1/status")).json()[field]
    return value is not None and value >= at_least


async def metrics(client: httpx.AsyncClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    samples = {}
    for family in text_string_to_metric_families((await client.get("/metrics")).text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


async def test_logs_and_feedback_are_learned_and_counted(client, iris):
    answer = await client.post(
        "/v1/log", json={"records": [record(i, iris, time=time.time()) for i in range(40)]}
    )
    assert answer.status_code == 200
    assert answer.json() == {"accepted": 40, "ignored": 0, "rejected": []}
    for i in range(40):
        reply = await client.post("/v2/models/iris/feedback", json={"id": f"r{i}", "label": int(iris.y[i])})
        assert reply.status_code == 200, reply.text
        assert reply.json()["outcome"] == "joined"
    assert (await client.post("/v2/models/iris/feedback", json={"id": "r0", "label": 0})).status_code == 409
    await until(lambda: status_of(client, "samples", 40))
    await until(lambda: status_of(client, "snapshot_version", 1))
    values = await metrics(client)
    assert values[("mllearner_samples_total", (("model", "iris"),))] == 40
    assert values[("mllearner_feedback_total", (("model", "iris"), ("outcome", "joined")))] == 40
    assert values[("mllearner_feedback_total", (("model", "iris"), ("outcome", "duplicate")))] == 1
    assert 0 <= values[("mllearner_prequential", (("metric", "accuracy"), ("model", "iris")))] <= 1
    assert ("mllearner_prequential", (("metric", "logLoss"), ("model", "iris"))) in values
    assert values[("mllearner_snapshot_version", (("model", "iris"),))] >= 1
    assert values[("mllearner_data_version", (("model", "iris"),))] >= 0


async def test_bad_records_are_refused_one_by_one_with_the_field_named(client, iris):
    records = [
        record(0, iris),
        {"id": "", "features": [1, 2, 3, 4]},
        {"id": "x", "features": [1, 2]},
        {"id": "y", "features": [1, "a", 3, 4]},
        {"id": "z", "features": [1, 2, 3, 4], "snapshot": -1},
        {"id": "w", "features": [1, 2, 3, 4], "time": time.time() + 3600},
        "not an object",
        {"id": "v", "features": [[1, 2, 3, 4], [5, 6, 7, 8]], "prediction": [1]},
    ]
    answer = (await client.post("/v1/log", json={"records": records})).json()
    assert answer["accepted"] == 1
    assert answer["rejected"] == [
        "records[1].id: must be a non-empty string of at most 256 characters",
        "records[2].features: the model takes 4 features per row, got 2",
        "records[3].features: must hold only numbers, in rows of equal length",
        "records[4].snapshot: must be a snapshot number (an integer >= 0)",
        "records[5].time: 3600 s in the future (the replica's clock is wrong)",
        "records[6]: must be an object with id, features, prediction, snapshot, time",
        "records[7].prediction: one value per row expected (2), got 1",
    ]
    values = await metrics(client)
    assert values[("mllearner_logged_requests_total", (("model", "iris"), ("outcome", "rejected")))] == 7


async def test_a_malformed_or_oversized_body_is_refused(client):
    bad_json = await client.post(
        "/v1/log", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert bad_json.status_code == 400
    assert bad_json.json()["error"].startswith("body: malformed JSON")
    assert (await client.post("/v1/log", json=[1, 2])).json() == {
        "error": 'records: the body must be {"records": [...]}'
    }
    huge = await client.post("/v1/log", content=b"[" + b"1," * 40_000 + b"1]")
    assert huge.status_code == 413
    assert "limit of 65536" in huge.json()["error"]


async def test_bad_feedback_gets_a_4xx_naming_the_field(client, iris):
    await client.post("/v1/log", json={"records": [record(0, iris)]})
    cases = [
        ({"id": "r0", "label": 9}, 400, "label: 9 is not one of the model's classes [0, 1, 2]"),
        ({"id": "r0"}, 400, "label: missing"),
        ({"id": 5, "label": 1}, 400, "id: must be the non-empty string id"),
        ({"id": "ghost", "label": 1}, 404, "id: 'ghost' is unknown"),
        (["r0", 1], 400, "body: feedback must be a JSON object"),
    ]
    for body, status, message in cases:
        answer = await client.post("/v2/models/iris/feedback", json=body)
        assert answer.status_code == status, (body, answer.text)
        assert answer.json()["error"].startswith(message), answer.json()
    other_model = await client.post("/v2/models/wine/feedback", json={"id": "r0", "label": 1})
    assert other_model.status_code == 404
    assert other_model.json()["error"].startswith("model: 'wine' is not learned here")
    values = await metrics(client)
    assert values[("mllearner_feedback_total", (("model", "iris"), ("outcome", "invalid")))] == 1
    assert values[("mllearner_feedback_total", (("model", "iris"), ("outcome", "unknown")))] == 1


async def test_unknown_routes_and_methods_answer_json(client):
    assert (await client.get("/v2/nothing")).json() == {"error": "Not Found"}
    assert (await client.get("/v1/log")).status_code == 405
    assert (await client.get("/v2/health/live")).json() == {"live": True}
    assert (await client.get("/v2/health/ready")).json() == {"ready": True, "snapshot_version": 0}


async def test_a_forwarder_sends_feedback_in_batches(client, iris):
    await client.post("/v1/log", json={"records": [record(i, iris) for i in range(5)]})
    items = [
        {"id": "r0", "label": int(iris.y[0])},
        {"id": "r1", "label": "daisy"},
        {"id": "r2"},
        "r3",
        {"id": "ghost", "label": 1},
        {"id": "r4", "label": int(iris.y[4])},
        {"id": "r0", "label": int(iris.y[0])},
    ]
    answer = await client.post("/v1/feedback", json={"feedback": items})
    assert answer.status_code == 200
    results = answer.json()["results"]
    assert [r["status"] for r in results] == [200, 400, 400, 400, 404, 200, 409]
    assert [r.get("id") for r in results] == ["r0", "r1", None, None, "ghost", "r4", "r0"]
    assert results[0]["data_version"] == results[5]["data_version"] == 0  # one commit for both rows
    assert results[1]["error"].startswith("label: 'daisy' is not one of the model's classes")
    assert results[2]["error"] == "feedback[2].label: missing; feedback to the learner must carry a label"
    assert results[3]["error"] == 'feedback[3]: feedback must be a JSON object {"id": ..., "label": ...}'
    assert (await client.post("/v1/feedback", json={"items": []})).status_code == 400
