"""The router in front of real `mlserving serve` processes: predictions, shadow agreement, feedback."""

from __future__ import annotations

import httpx
import pytest
from router_testing import route, table, variant

from support import wait_until
from support.models import serving, train_iris_models

pytestmark = pytest.mark.integration


def test_router_with_real_model_servers(start_router, tmp_path):
    iris = train_iris_models(tmp_path / "models")
    with (
        serving(tmp_path, iris.classifier_onnx, name="iris-stable") as stable,
        serving(tmp_path, iris.classifier_onnx, name="iris-candidate") as candidate,
    ):
        router = start_router(
            table(
                route(
                    variants=[
                        variant("stable", stable.url, weight=1, model="iris-stable"),
                        variant("candidate", candidate.url, model="iris-candidate"),
                    ],
                    shadow={"variant": "candidate", "percent": 100},
                )
            )
        )
        with httpx.Client(base_url=router.url, timeout=20) as client:
            ids = []
            for row, label in zip(iris.features, iris.labels, strict=True):
                response = client.post("/v2/models/iris/infer", json=stable.infer_body([row]))
                assert response.status_code == 200, response.text
                body = response.json()
                assert body["id"] == response.headers["x-mlrollouts-id"]
                assert response.headers["x-mlrollouts-variant"] == "stable"
                outputs = {o["name"]: o for o in body["outputs"]}
                assert outputs["label"]["data"] == [int(label)]
                ids.append((body["id"], int(label)))
            metadata = client.get("/v2/models/iris")
            assert metadata.status_code == 200 and metadata.json()["name"] == "iris-stable"

            for response_id, label in ids:
                answer = client.post(
                    "/v2/models/iris/feedback", json={"id": response_id, "label": label, "reward": 1}
                )
                assert answer.status_code == 200, answer.text
                # The model server knows the router's id (it was in the request) and accepts the feedback.
                assert answer.json()["forwarded"] is True, answer.json()

        wait_until(
            lambda: router.metric("mlrouter_shadow_agreement_total", variant="candidate") >= len(ids),
            timeout=10,
            message="shadow comparisons",
        )
        assert router.metric("mlrouter_shadow_agreement_total", variant="candidate", agree="true") == len(ids)
        assert router.metric("mlrouter_feedback_total", route="iris", variant="stable") == len(ids)
        server_metrics = httpx.get(f"{stable.url}/metrics").text
        assert any(
            line.startswith("mlserving_feedback_total") and line.endswith(f" {float(len(ids))}")
            for line in server_metrics.splitlines()
        ), server_metrics
