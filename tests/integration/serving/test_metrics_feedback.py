"""Metric names and labels of DESIGN §5, prediction distribution, feedback and signed ids."""

from __future__ import annotations

import asyncio

import httpx
import numpy as np
import pytest

from support.models import metric_value, serving

pytestmark = pytest.mark.integration


def scrape(client, server) -> str:
    return client.get(f"{server.url}/metrics").text


def test_metric_names_and_labels_from_environment(skops_server, iris, client):
    labels = {"model": "iris-metrics", "revision": "rev-a"}
    before = scrape(client, skops_server)
    ok_before = metric_value(before, "mlserving_requests_total", code="200", **labels) or 0.0
    for _ in range(3):
        client.post(f"{skops_server.url}/v2/models/iris/infer", json=skops_server.infer_body(iris.features))
    client.post(f"{skops_server.url}/v2/models/iris/infer", content=b"{broken")
    text = scrape(client, skops_server)
    assert metric_value(text, "mlserving_requests_total", code="200", **labels) == ok_before + 3
    assert metric_value(text, "mlserving_requests_total", code="400", **labels) >= 1
    assert metric_value(text, "mlserving_request_duration_seconds_count", **labels) >= 4
    # Buckets from 100 microseconds to 10 seconds.
    assert 'le="0.0001"' in text and 'le="10.0"' in text
    for label in ("0", "1", "2"):
        assert metric_value(text, "mlserving_predictions_total", output="label", bucket=label, **labels) >= 6
    assert metric_value(text, "mlserving_model_ready", **labels) == 1.0
    for name in ("mlserving_feedback_total", "mlserving_reward_sum", "mlserving_model_load_failures_total"):
        assert f"# TYPE {name.removesuffix('_total')}" in text, name


def test_feedback_reward_and_label(skops_server, iris, client):
    labels = {"model": "iris-metrics", "revision": "rev-a"}
    before = scrape(client, skops_server)
    fb0 = metric_value(before, "mlserving_feedback_total", **labels) or 0.0
    reward0 = metric_value(before, "mlserving_reward_sum", **labels) or 0.0
    body = skops_server.infer_body(iris.features[:1])
    generated = client.post(f"{skops_server.url}/v2/models/iris/infer", json=body).json()["id"]
    echoed = client.post(
        f"{skops_server.url}/v2/models/iris/infer", json={**body, "id": "router.v1.abc"}
    ).json()
    assert echoed["id"] == "router.v1.abc"
    r1 = client.post(f"{skops_server.url}/v2/models/iris/feedback", json={"id": generated, "reward": 0.75})
    assert r1.status_code == 200 and r1.json()["accepted"] is True
    r2 = client.post(f"{skops_server.url}/v2/models/iris/feedback", json={"id": "router.v1.abc", "label": 0})
    assert r2.json() == {"id": "router.v1.abc", "accepted": True, "reward": 1.0, "correct": True}
    r3 = client.post(f"{skops_server.url}/v2/models/iris/feedback", json={"id": generated, "label": 2})
    assert r3.json()["correct"] is False and r3.json()["reward"] == 0.0
    # the same feedback again (a client that lost the answer) is refused, and counts nowhere
    for again in ({"id": generated, "reward": 0.75}, {"id": generated, "label": 2}):
        refused = client.post(f"{skops_server.url}/v2/models/iris/feedback", json=again)
        assert refused.status_code == 409 and "already counted" in refused.json()["error"], refused.text
    text = scrape(client, skops_server)
    assert metric_value(text, "mlserving_feedback_total", **labels) == fb0 + 3
    assert metric_value(text, "mlserving_reward_sum", **labels) == pytest.approx(reward0 + 1.75)
    assert metric_value(text, "mlserving_feedback_labels_total", correct="false", **labels) >= 1


def test_signed_ids_are_accepted_by_another_replica_with_the_same_key(iris, tmp_path, client):
    env = {"MLSERVING_ID_KEY": "a-shared-key-of-enough-length"}
    with serving(tmp_path, iris.classifier_onnx, name="iris", env=env) as first:
        response_id = client.post(
            f"{first.url}/v2/models/iris/infer", json=first.infer_body(iris.features[:1])
        ).json()["id"]
    with serving(tmp_path, iris.classifier_onnx, name="iris", env=env) as second:
        ok = client.post(f"{second.url}/v2/models/iris/feedback", json={"id": response_id, "reward": 1})
        assert ok.status_code == 200, ok.text
        forged = response_id[:-2] + ("AA" if not response_id.endswith("AA") else "BB")
        bad = client.post(f"{second.url}/v2/models/iris/feedback", json={"id": forged, "reward": 1})
        assert bad.status_code == 404


def test_regression_predictions_use_fixed_bins(iris, tmp_path, compile_cache, client):
    extra = ["--compile-cache-dir", str(compile_cache)]
    env = {"MLSERVING_MODEL": "diabetes", "MLSERVING_REVISION": "r1"}
    with serving(tmp_path, iris.regressor_skops, name="diabetes", extra=extra, env=env) as server:
        meta = client.get(f"{server.url}/v2/models/diabetes").json()
        assert meta["outputs"] == [{"name": "value", "datatype": "FP32", "shape": [-1]}]
        rows = np.zeros((4, 10))
        out = client.post(f"{server.url}/v2/models/diabetes/infer", json=server.infer_body(rows)).json()
        value = out["outputs"][0]["data"][0]
        assert 100 <= value < 200  # the intercept: mean of the diabetes target (~152)
        text = scrape(client, server)
        assert (
            metric_value(text, "mlserving_predictions_total", output="value", bucket="100", model="diabetes")
            == 4
        )


def test_concurrent_requests_are_batched_and_each_gets_its_own_answer(onnx_server, iris):
    rows = np.tile(iris.features, (8, 1))  # 48 rows, labels known

    async def run() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=48)) as ac:
            bodies = [onnx_server.infer_body(rows[i : i + 1]) for i in range(len(rows))]
            for _ in range(3):  # several waves: merging depends on arrival timing
                responses = await asyncio.gather(
                    *(ac.post(f"{onnx_server.url}/v2/models/iris/infer", json=b) for b in bodies)
                )
            return responses

    responses = asyncio.run(run())
    labels = [r.json()["outputs"][0]["data"][0] for r in responses]
    assert labels == np.tile(iris.labels, 8).tolist()
    text = httpx.get(f"{onnx_server.url}/metrics").text
    single_row_calls = sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("mlserving_batch_rows_bucket") and 'le="1.0"' in line
    )
    calls = metric_value(text, "mlserving_batch_rows_count")
    assert calls is not None and calls > 0
    assert single_row_calls < calls, "no model call merged two or more requests"
