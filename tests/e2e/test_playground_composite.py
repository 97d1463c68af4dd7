"""The local playground end to end: the composite scenario of `make demo`, checked from the API, the
client, the event sink and the kubectl plugin.

One playground (API emulator, Prometheus, process kubelet, operator, real model servers, real
routers and a real CloudEvents sink process) serves the whole module; the tests run in order on it:
the credit-score graph answers what its components compute, a component canary runs inside it
while it serves, its high-risk results reach the sink, the plugin shows its tree, and a deleted
component makes it Degraded naming the node.
"""

from __future__ import annotations

import re
import subprocess
import sys

import httpx
import pytest
import skops.io as sio

from mlrollouts.core.names import API_VERSION
from mlrollouts.local.demo_composite import (
    CANARIED,
    HIGH_RISK,
    CompositeScenario,
    infer_body,
    train_credit_models,
)
from mlrollouts.local.demo_scenario import DemoContext, entry_point
from mlrollouts.local.event_sink import EventSinkProcess
from mlrollouts.local.playground import Playground
from support import require_binary, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ENSEMBLE_ROW = [12.0, 65.0, 0.3, 0.0]
THIN_FILE_ROW = [1.0, 30.0, 0.9, 2.0]  # one year of history: the switch sends it to credit-thin-file
SENT_HIGH_RISK: list[str] = []
"""Ids of the results above HIGH_RISK that the tests got by calling the graph themselves."""


@pytest.fixture(scope="module")
def composite(tmp_path_factory):
    require_binary("prometheus")
    root = tmp_path_factory.mktemp("composite")
    models = train_credit_models(root / "models")
    playground = Playground(root / "state").start()
    sink = EventSinkProcess(root / "event-sink.log")
    try:
        scenario = CompositeScenario(DemoContext(playground), models, sink.start())
    except BaseException:
        sink.stop()
        playground.stop()
        raise
    try:
        yield scenario
    finally:
        scenario.stop()
        playground.stop()


def infer(composite: CompositeScenario, rows: list[list[float]]) -> httpx.Response:
    url = entry_point(composite.kube, composite.namespace, composite.name)
    assert url is not None, "the composite has no ready endpoint"
    response = httpx.post(f"{url}/v2/models/{composite.name}/infer", json=infer_body(rows), timeout=10.0)
    if response.status_code == 200:
        scores = next(o["data"] for o in response.json()["outputs"] if o["name"] == "value")
        if any(score > HIGH_RISK for score in scores):
            SENT_HIGH_RISK.append(response.json()["id"])
    return response


def predict(composite: CompositeScenario, model: str, row: list[float]) -> float:
    return float(sio.load(composite.models.file(model)).predict([row])[0])


def test_graph_answers_the_linear_ensemble_and_the_switch(composite):
    composite.bring_up()
    response = infer(composite, [ENSEMBLE_ROW, THIN_FILE_ROW])
    assert response.status_code == 200, response.text
    body = response.json()
    value = next(o for o in body["outputs"] if o["name"] == "value")
    assert value["shape"] == [2]
    # the example's graph: 0.5 income + 0.3 history + 0.2 behaviour, thin files to their own model
    ensemble = (
        0.5 * predict(composite, "credit-income-v1", ENSEMBLE_ROW)
        + 0.3 * predict(composite, "credit-history-v1", ENSEMBLE_ROW)
        + 0.2 * predict(composite, "credit-behaviour-v1", ENSEMBLE_ROW)
    )
    thin_file = predict(composite, "credit-thin-file-v1", THIN_FILE_ROW)
    assert value["data"] == pytest.approx([ensemble, thin_file], abs=1e-3)

    # every component says which revision served it: its stable one
    components = body["parameters"]["graph"]["components"]
    assert set(components) == {"income", "history", "behaviour", "thin-file"}
    stable = composite.component_status(CANARIED)["stableRevision"]
    assert components["income"]["model"] == CANARIED and components["income"]["variant"] == stable

    # a malformed request is refused before any component is called, naming the field
    url = entry_point(composite.kube, composite.namespace, composite.name)
    bad = {"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP64", "data": [1.0, 2.0]}]}
    refused = httpx.post(f"{url}/v2/models/{composite.name}/infer", json=bad, timeout=10.0)
    assert refused.status_code == 400 and "inputs[0]" in refused.json()["error"], refused.text


def test_component_canary_runs_inside_the_graph_while_it_serves(composite):
    v1 = composite.v1
    composite.traffic.start()
    try:
        during = composite.canary_inside_the_graph()
    finally:
        composite.traffic.stop()
    component = composite.component_status(CANARIED)
    v2 = component["stableRevision"]
    assert v2 not in (None, v1) and component["phase"] == "Healthy"

    answers = composite.traffic.snapshot()
    assert composite.client_errors() == 0, (answers, composite.traffic.errors)
    served_by = {answer.income for answer in answers}
    assert {v1, v2} <= served_by, answers  # the client got answers through both revisions
    # the graph stayed Ready while its node showed the component's canary and its split
    assert during and all(s.phase == "Ready" for s in during), [s.phase for s in during]
    assert any(s.nodes.get("income") == "Progressing" for s in during), [s.nodes for s in during]
    assert any(0 < s.weights.get(v2, 0) < 100 for s in during), [s.weights for s in during]
    # and the composite's status follows the component to its new stable revision
    income = wait_until(
        lambda: next(
            (
                n
                for n in composite.status()["nodes"]
                if n["name"] == "income" and n.get("reason") == "ComponentReady"
            ),
            None,
        ),
        timeout=30,
        message="the income node to show the promoted revision",
    )
    assert income["ready"] and income["message"].endswith(f"serving {v2}"), income


def test_high_risk_results_reach_the_sink_as_cloudevents(composite):
    composite.events_sent_by_checks = len(SENT_HIGH_RISK)
    composite.check_events()
    events = composite.sink.events()
    from_traffic = sum(n for answer, n in composite.traffic.snapshot().items() if answer.event)
    assert from_traffic > 0 and len(events) == from_traffic + len(SENT_HIGH_RISK)
    assert set(SENT_HIGH_RISK) <= {e["id"] for e in events}
    assert {e["type"] for e in events} == {"io.mlrollouts.graph.result"}
    assert {e["source"] for e in events} == {f"/mlrollouts/graphs/{composite.name}"}
    for event in events:
        scores = next(o["data"] for o in event["data"]["outputs"] if o["name"] == "value")
        assert any(score > HIGH_RISK for score in scores), event

    # the event of a result is that result: same id, same outputs; a low score sends none (a
    # high one sent after it shows when the sink has had the time to receive it)
    risky, safe, later = (infer(composite, [row]) for row in (THIN_FILE_ROW, ENSEMBLE_ROW, THIN_FILE_ROW))
    assert risky.status_code == safe.status_code == later.status_code == 200
    last = events[-1]["seq"]
    arrived = wait_until(
        lambda: len(page := composite.sink.received(after=last)["events"]) >= 2 and page,
        timeout=20,
        message="the new events",
    )
    by_id = {e["id"]: e for e in arrived}
    assert set(by_id) == {risky.json()["id"], later.json()["id"]}
    assert by_id[risky.json()["id"]]["data"]["outputs"] == risky.json()["outputs"]


def plugin(composite: CompositeScenario, *args: str) -> subprocess.CompletedProcess[str]:
    kubeconfig = str(composite.playground.kubeconfig)
    return subprocess.run(
        [sys.executable, "-m", "mlrollouts.cli.main", *args, "--kubeconfig", kubeconfig],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_plugin_status_shows_the_graph_as_a_tree(composite):
    prometheus = composite.playground.prometheus_url
    result = plugin(composite, "status", f"cmodel/{composite.name}", "--prometheus-url", prometheus)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert out.startswith(f"CompositeModel {composite.namespace}/{composite.name}\nPhase:      Ready")
    assert f"events to {composite.sink.url}" in out
    lines = out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.split()[:2] == ["NODE", "TYPE"])
    width = lines[header].index("TYPE")
    rows = {line[:width].strip(): line for line in lines[header + 1 : header + 7]}
    # the tree: the switch, its case and its default, the ensemble's three children below it
    assert list(rows) == [
        "route",
        "├─ thin-file (if input[0] lt 2)",
        "└─ score (default)",
        "├─ income",
        "├─ history",
        "└─ behaviour",
    ], rows
    assert "Switch" in rows["route"] and "Ensemble linear" in rows["└─ score (default)"]
    assert rows["├─ income"].startswith("     ├─ income")  # nested under score
    v2 = composite.component_status(CANARIED)["stableRevision"]
    income = rows["├─ income"]
    assert f"ModelDeployment/{CANARIED}" in income and f"{v2} 100%" in income and "Ready" in income
    assert all(re.search(r" \d+(\.\d+)?ms ", row) for row in rows.values()), rows  # each node's p99
    assert f"p99 over the last 5m from {prometheus}" in out


def test_missing_component_degrades_the_composite_naming_the_node(composite):
    kube, namespace = composite.kube, composite.namespace
    kube.delete(API_VERSION, "ModelDeployment", namespace, "credit-thin-file")
    status = composite.watch(lambda s: s.get("phase") == "Degraded", 60, "the composite notices")
    node = next(n for n in status["nodes"] if n["name"] == "thin-file")
    assert node["reason"] == "ComponentMissing" and not node["ready"]
    degraded = next(c for c in status["conditions"] if c["type"] == "Degraded")
    assert degraded["status"] == "True"
    assert "thin-file" in degraded["message"] and "spec.nodes[5].modelDeployment" in degraded["message"]

    # the rest of the graph keeps answering; a row for the missing node gets 503 naming it
    answered = wait_until(
        lambda: (r := infer(composite, [THIN_FILE_ROW])).status_code != 200 and r,
        timeout=30,
        message="the graph to stop reaching the deleted component",
    )
    assert answered.status_code == 503 and answered.json()["node"] == "thin-file", answered.text
    assert infer(composite, [ENSEMBLE_ROW]).status_code == 200
