"""Composite models: a real router running graphs over real model servers (tiny affine ONNX models).

The expected answers are computed by hand from the models' weights (graph_testing.affine).
"""

from __future__ import annotations

import httpx
import pytest
from graph_testing import by_hand, ensemble, graph_route, model, rows_request, sequence, value_rows
from router_testing import route, table, variant

from support.models import metric_value

pytestmark = pytest.mark.integration

ROWS = ([1.0, 2.0], [-3.0, 0.5])


def weighted_mean(rows_per_child: list[list[list[float]]], weights: list[float]) -> list[list[float]]:
    total = sum(weights)
    return [
        [
            sum(w * child[r][c] for w, child in zip(weights, rows_per_child, strict=True)) / total
            for c in range(2)
        ]
        for r in range(len(rows_per_child[0]))
    ]


def approx_rows(rows: list[list[float]]):
    """Row-wise ``pytest.approx`` (it does not compare nested lists)."""
    return [pytest.approx(row) for row in rows]


def rows_by_hand(name: str, rows=ROWS) -> list[list[float]]:
    return [by_hand(name, row) for row in rows]


def composite_table(servers) -> dict:
    shift, double, swap = (model(n, servers[n].url) for n in ("shift", "double", "swap"))
    switch = {
        "name": "entry",
        "type": "Switch",
        "cases": [{"when": {"input": "input", "feature": 0, "op": "ge", "value": 10}, "node": "double"}],
        "default": "swap",
    }
    return table(
        graph_route(
            "ensemble",
            "score",
            shift,
            double,
            swap,
            ensemble("score", ["shift", "double", "swap"], type="weightedMean", weights=[1, 2, 1]),
        ),
        graph_route(
            "chain",
            "chain",
            shift,
            double,
            swap,
            sequence("chain", ["shift", "double", "swap"], [{"value": "input"}, {"value": "input"}]),
        ),
        graph_route("switch", "entry", double, swap, switch),
        route(name="plain", model="shift", variants=[variant("v", servers["shift"].url, weight=1)]),
    )


def test_ensemble_sequence_and_switch_answer_the_hand_computed_values(affine, start_router):
    router = start_router(composite_table(affine))
    with httpx.Client(base_url=router.url, timeout=20) as client:
        answer = client.post("/v2/models/ensemble/infer", json=rows_request(*ROWS))
        assert answer.status_code == 200, answer.text
        body = answer.json()
        expected = weighted_mean(
            [rows_by_hand("shift"), rows_by_hand("double"), rows_by_hand("swap")], [1, 2, 1]
        )
        assert value_rows(body) == approx_rows(expected)
        assert expected[0] == [2.125, 3.0]  # (1.5 + 2*2 + 3) / 4, (2 + 2*4 + 2) / 4
        assert body["id"] == answer.headers["x-mlrollouts-id"] and body["id"].startswith("ensemble.graph.")
        components = body["parameters"]["graph"]["components"]
        assert {name: c["model"] for name, c in components.items()} == {
            n: n for n in ("shift", "double", "swap")
        }

        chain = client.post("/v2/models/chain/infer", json=rows_request(*ROWS)).json()
        hops = [by_hand("swap", by_hand("double", by_hand("shift", row))) for row in ROWS]
        assert value_rows(chain) == approx_rows(hops) and hops[0] == [5.0, 4.0]

        mixed = ([1.0, 2.0], [20.0, 1.0], [3.0, 4.0])  # row 1 takes the case, the others the default
        switched = client.post("/v2/models/switch/infer", json=rows_request(*mixed)).json()
        assert value_rows(switched) == approx_rows(
            [by_hand("swap", mixed[0]), by_hand("double", mixed[1]), by_hand("swap", mixed[2])]
        )

        plain = client.post("/v2/models/shift/infer", json=rows_request(*ROWS))  # a plain route beside them
        assert plain.headers["x-mlrollouts-variant"] == "v" and value_rows(plain.json()) == rows_by_hand(
            "shift"
        )

        feedback = client.post(
            "/v2/models/ensemble/feedback",
            json={"node": "double", "id": components["double"]["id"], "reward": 1},
        )
        assert feedback.status_code == 200 and feedback.json()["forwarded"] is True, feedback.text
    served = httpx.get(f"{affine['double'].url}/metrics").text
    assert metric_value(served, "mlserving_feedback_total") >= 1


def test_metadata_readiness_and_v1_of_a_composite(affine, start_router):
    router = start_router(composite_table(affine))
    with httpx.Client(base_url=router.url, timeout=20) as client:
        metadata = client.get("/v2/models/ensemble")
        assert metadata.status_code == 200, metadata.text
        assert metadata.json() == {
            "name": "ensemble",
            "platform": "mlrollouts-graph",
            "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, 2]}],
            "outputs": [{"name": "value", "datatype": "FP32", "shape": [-1, 2]}],
            "properties": {"route": "ensemble", "root": "score"},
        }
        ready = client.get("/v2/models/chain/ready")
        assert ready.status_code == 200 and ready.json()["nodes"] == {
            "shift": True,
            "double": True,
            "swap": True,
        }

        predicted = client.post("/v1/models/ensemble:predict", json={"instances": [list(r) for r in ROWS]})
        assert predicted.status_code == 200, predicted.text
        assert predicted.json()["predictions"] == approx_rows(
            weighted_mean([rows_by_hand("shift"), rows_by_hand("double"), rows_by_hand("swap")], [1, 2, 1])
        )
        assert client.get("/v1/models/switch").json() == {"name": "switch", "ready": True}

        refused = client.post(
            "/v2/models/ensemble/infer", json={"inputs": [{"name": "input", "shape": [1, 2]}]}
        )
        assert refused.status_code == 400 and "inputs[0].datatype" in refused.json()["error"]
        wrong_name = client.post(
            "/v2/models/ensemble/infer",
            json={"inputs": [{"name": "nope", "datatype": "FP32", "shape": [1, 2], "data": [1, 2]}]},
        )
        # The component's own 400 reaches the client, with the node that refused it.
        assert wrong_name.status_code == 400 and wrong_name.json()["node"] in ("shift", "double", "swap")
        assert "nope" in wrong_name.json()["error"]
        assert client.post("/v2/models/ensemble/feedback", json={"id": "x", "reward": 1}).status_code == 400
        assert client.get("/v2/models/ensemble/infer").status_code == 405
        assert client.get("/v2/models/ensemble/versions/1").status_code == 404


def test_component_errors_and_timeouts_follow_on_error(affine, start_upstream, start_router):
    broken = start_upstream("broken", "--status", "500")
    slow = start_upstream("slow", "--delay", "2")
    shift, double = model("shift", affine["shift"].url), model("double", affine["double"].url)
    zeros = [{"name": "value", "datatype": "FP64", "value": [0.0, 0.0]}]
    router = start_router(
        table(
            graph_route(
                "skip", "e", shift, double, model("broken", broken.url, onError="Skip"),
                ensemble("e", ["shift", "double", "broken"], type="weightedMean", weights=[1, 2, 1]),
            ),
            graph_route(
                "default", "e", shift,
                model("slow", slow.url, timeoutSeconds=0.3, onError="Default", defaultOutputs=zeros),
                ensemble("e", ["shift", "slow"]),
            ),
            graph_route("fail-error", "e", shift, model("broken", broken.url), ensemble("e", ["shift", "broken"])),
            graph_route(
                "fail-timeout", "e", shift, model("slow", slow.url, timeoutSeconds=0.3), ensemble("e", ["shift", "slow"])
            ),
            graph_route("graph-timeout", "e", shift, model("slow", slow.url), ensemble("e", ["shift", "slow"]),
                        timeoutSeconds=0.5),
            graph_route("missing", "e", shift, model("ghost", "http://no-such-component.invalid:8080"),
                        ensemble("e", ["shift", "ghost"])),
        )
    )  # fmt: skip

    def infer(name: str) -> httpx.Response:
        return httpx.post(f"{router.url}/v2/models/{name}/infer", json=rows_request(*ROWS), timeout=20)

    skipped = infer("skip")
    assert skipped.status_code == 200, skipped.text
    assert value_rows(skipped.json()) == approx_rows(
        weighted_mean([rows_by_hand("shift"), rows_by_hand("double")], [1, 2])
    )
    assert skipped.headers["x-mlrollouts-graph-skipped"] == "broken"
    [record] = skipped.json()["parameters"]["graph"]["skipped"]
    assert record["node"] == "broken" and record["status"] == 502 and "answered 500" in record["error"]

    defaulted = infer("default")
    assert defaulted.status_code == 200, defaulted.text
    assert value_rows(defaulted.json()) == approx_rows(
        [[v / 2 for v in row] for row in rows_by_hand("shift")]
    )
    assert defaulted.headers["x-mlrollouts-graph-defaulted"] == "slow"
    assert defaulted.elapsed.total_seconds() < 1.5

    for name, status, node, fragment in [
        ("fail-error", 502, "broken", "answered 500"),
        ("fail-timeout", 504, "slow", "timeout of 0.3 s"),
        ("graph-timeout", 504, "slow", "did not answer within 0.5 s (waiting for slow)"),
        ("missing", 503, "ghost", "is unavailable"),
    ]:
        failed = infer(name)
        assert failed.status_code == status, (name, failed.text)
        assert failed.json()["node"] == node and fragment in failed.json()["error"], (name, failed.text)

    missing_metadata = httpx.get(f"{router.url}/v2/models/missing", timeout=10)
    assert missing_metadata.status_code == 200  # 'shift' answers for the ensemble's inputs and outputs
    missing_ready = httpx.get(f"{router.url}/v2/models/missing/ready", timeout=10)
    assert missing_ready.status_code == 503 and missing_ready.json()["node"] == "ghost"
    assert httpx.get(f"{router.url}/v2/models/skip/ready", timeout=10).status_code == 200  # 'broken' is soft

    assert router.metric("mlgraph_node_requests_total", graph="skip", node="broken", code="502") == 1
    assert router.metric("mlgraph_node_requests_total", graph="default", node="slow", code="504") == 1
    assert router.metric("mlgraph_requests_total", graph="missing", code="503") == 1
    assert router.metric("mlgraph_requests_total", graph="skip", code="200") == 1
    assert router.proc.alive() and infer("skip").status_code == 200
