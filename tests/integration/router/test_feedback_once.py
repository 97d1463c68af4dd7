"""Feedback sent again after a router kill -9 is counted once where it is kept: the learner's data log
and the model server's counters.

Real processes: a learner, a model server logging to it (``--learner-url``) and a router in front.
A prediction through the router gets a signed response id; its labelled feedback is acknowledged;
the router is killed and started again on the same port, and the client sends the same feedback
again (it cannot know whether the first one arrived). The model server refuses the copy (409: it
remembers what it counted; after a server restart the learner would, its row being in the log), the
learner writes nothing more, and the router answers 409 too.

The router's own ``mlrouter_feedback_total`` and reward sums (what experiments read) count the copy
neither: the restarted router has no memory of the id, but the variant's 409 tells it the feedback
was kept already, and it answers 409 too. Feedback sent twice to one running router is refused by the
router itself.
"""

from __future__ import annotations

import httpx
import pytest
from router_testing import route, table, variant

from integration.learning.learner_process import learner_process, train_initial_model
from mlserving.learning.datalog import DataLog
from mlserving.learning.location import StorageLocation
from support import free_port, wait_until
from support.models import metric_value, serving

pytestmark = [pytest.mark.integration, pytest.mark.faults]


def test_feedback_sent_again_after_a_router_kill_is_counted_once(tmp_path, start_router):
    model, x, y = train_initial_model(tmp_path / "model")
    storage = (tmp_path / "store").as_uri()
    with (
        learner_process(tmp_path, model, storage, extra=["--batch-size", "4"]) as learner,
        serving(tmp_path, model, name="cancer", extra=["--learner-url", learner.url]) as server,
    ):
        routes = table(route("cancer", "cancer", variants=[variant("v", server.url, weight=1)]))
        port = free_port()
        router = start_router(routes, port=port)
        request = {
            "inputs": [{"name": "input", "datatype": "FP32", "shape": [1, x.shape[1]], "data": x[0].tolist()}]
        }
        answer = httpx.post(f"{router.url}/v2/models/cancer/infer", json=request, timeout=20)
        assert answer.status_code == 200, answer.text
        response_id = answer.json()["id"]
        feedback = {"id": response_id, "label": int(y[0]), "reward": 1.0}

        first = httpx.post(f"{router.url}/v2/models/cancer/feedback", json=feedback, timeout=20)
        assert first.status_code == 200, first.text
        assert first.json()["upstreamStatus"] == 200, first.text
        twice = httpx.post(f"{router.url}/v2/models/cancer/feedback", json=feedback, timeout=20)
        assert twice.status_code == 409 and "already counted" in twice.json()["error"], twice.text
        counted_by_first_router = router.metric("mlrouter_feedback_total", route="cancer", variant="v")

        router.proc.kill()
        router = start_router(routes, port=port)
        again = httpx.post(f"{router.url}/v2/models/cancer/feedback", json=feedback, timeout=20)
        assert again.status_code == 409 and "kept it" in again.json()["error"], again.text
        counted_by_second_router = router.metric("mlrouter_feedback_total", route="cancer", variant="v") or 0

        metrics = httpx.get(f"{server.url}/metrics", timeout=5).text
        server_count = metric_value(metrics, "mlserving_feedback_total")
        joined = learner.metric("mllearner_feedback_total", model="cancer", outcome="joined")
        duplicate = learner.metric("mllearner_feedback_total", model="cancer", outcome="duplicate")
        wait_until(lambda: learner.status()["data_version"] is not None, message="the row written")

    rows = DataLog(StorageLocation(storage), n_features=x.shape[1], label_kind="int").read_rows()
    print(
        f"\nlearner: rows {rows.request_id.count(response_id)}, joined {joined}, duplicate {duplicate}; "
        f"server mlserving_feedback_total {server_count}; router mlrouter_feedback_total "
        f"{counted_by_first_router} before the kill + {counted_by_second_router} after"
    )
    assert rows.request_id == [response_id] and rows.label == [int(y[0])]
    assert (joined, duplicate) == (1, 0)  # the server refused the copy before the learner saw it
    assert server_count == 1
    assert (counted_by_first_router, counted_by_second_router) == (1, 0)
