"""The model server counts the sum of squared rewards next to their sum (negative rewards too)."""

from __future__ import annotations

import pytest

from support.models import metric_value

pytestmark = pytest.mark.integration

LABELS = {"model": "iris-metrics", "revision": "rev-a"}


def totals(client, server) -> tuple[float, float, float]:
    text = client.get(f"{server.url}/metrics").text
    assert "# TYPE mlserving_reward_sum_squares gauge" in text
    return tuple(  # type: ignore[return-value]
        metric_value(text, name, **LABELS) or 0.0
        for name in ("mlserving_feedback_total", "mlserving_reward_sum", "mlserving_reward_sum_squares")
    )


def test_reward_sum_of_squares(skops_server, iris, client):
    feedback0, sum0, squares0 = totals(client, skops_server)
    body = skops_server.infer_body(iris.features[:1])
    for reward in (2.0, -3.0):  # one reward per response
        response_id = client.post(f"{skops_server.url}/v2/models/iris/infer", json=body).json()["id"]
        ok = client.post(
            f"{skops_server.url}/v2/models/iris/feedback", json={"id": response_id, "reward": reward}
        )
        assert ok.status_code == 200, ok.text
    # a label alone becomes a reward of 1 (right) or 0 (wrong): its square counts too
    predicted = client.post(f"{skops_server.url}/v2/models/iris/infer", json=body).json()
    label = predicted["outputs"][0]["data"][0]
    labelled = client.post(
        f"{skops_server.url}/v2/models/iris/feedback", json={"id": predicted["id"], "label": label}
    )
    assert labelled.json()["reward"] == 1.0
    too_large = client.post(
        f"{skops_server.url}/v2/models/iris/feedback", json={"id": response_id, "reward": -1e200}
    )
    assert too_large.status_code == 400 and "reward" in too_large.json()["error"]
    feedback, total, squares = totals(client, skops_server)
    assert feedback == feedback0 + 3
    assert total == pytest.approx(sum0 + 2.0 - 3.0 + 1.0)
    assert squares == pytest.approx(squares0 + 4.0 + 9.0 + 1.0)
