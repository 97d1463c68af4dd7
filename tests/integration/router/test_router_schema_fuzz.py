"""Schemathesis run of the Open Inference Protocol REST spec against a real router in front of real
model servers: a plain route split over two server processes, and a composite model (a graph route).

Generated requests, valid and malformed, go to both models through every operation of the spec, with
and without the version segment. The router must answer no 5xx (checked on every answer, and again on
the router's own request counters at the end) and stay up, serving correct answers afterwards.

``FUZZ_EXAMPLES`` (default 240) is the number of examples spread over the operations; ``make fuzz``
runs 10 000.
"""

from __future__ import annotations

import copy
import os
import re

import httpx
import pytest
import schemathesis
import yaml
from graph_testing import by_hand, ensemble, graph_route, model, rows_request, sequence, value_rows
from hypothesis import HealthCheck, settings
from router_testing import route, table, variant
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import content_type_conformance, negative_data_rejection

from support import SPECS_DIR

pytestmark = pytest.mark.integration

SPEC = SPECS_DIR / "open_inference_rest.yaml"
PLAIN_MODEL = "pair"
GRAPH_MODEL = "credit-score"
VERSION = "1"
# The router answers for its own errors; what it forwards is the servers' (whose conformance the
# server's own schemathesis run checks), so the checks here are about the router's part.
CHECKS = [not_a_server_error, content_type_conformance, negative_data_rejection]
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "240"))


def router_spec(models: list[str], version: str) -> dict:
    """The spec with its ``${...}`` templates made plain, the path parameters pinned to the routed models
    and version, and each versioned model path also offered without its version (the protocol's
    version segment is optional)."""
    raw = yaml.safe_load(SPEC.read_text())
    paths: dict = {}
    for path, item in raw["paths"].items():
        plain = path.replace("${", "{")
        paths[plain] = copy.deepcopy(item)
        if "/versions/{MODEL_VERSION}" in plain:
            unversioned = copy.deepcopy(item)
            unversioned["parameters"] = [p for p in item["parameters"] if p["name"] != "MODEL_VERSION"]
            for operation in (v for k, v in unversioned.items() if k in ("get", "post")):
                operation["operationId"] += "-unversioned"
            paths[plain.replace("/versions/{MODEL_VERSION}", "")] = unversioned
    for item in paths.values():
        for param in item.get("parameters", []):
            if param["name"] == "MODEL_NAME":
                param["schema"] = {"type": "string", "enum": models}
            elif param["name"] == "MODEL_VERSION":
                param["schema"] = {"type": "string", "enum": [version]}
    return {**raw, "paths": paths}


SPEC_DOCUMENT = router_spec([PLAIN_MODEL, GRAPH_MODEL], VERSION)
OPERATIONS = sum(1 for item in SPEC_DOCUMENT["paths"].values() for k in item if k in ("get", "post"))
schema = schemathesis.openapi.from_dict(SPEC_DOCUMENT)
generated: list[int] = []  # statuses of every generated request, for the totals reported at the end


@pytest.fixture(scope="module")
def router(affine, module_starters):
    """One router for the module: ``pair`` split over the shift and double servers, and a graph."""
    shift, double, swap = (model(n, affine[n].url) for n in ("shift", "double", "swap"))
    plain = route(
        "pair",
        PLAIN_MODEL,
        variants=[
            variant("shift", affine["shift"].url, weight=1, model="shift"),
            variant("double", affine["double"].url, weight=1, model="double"),
        ],
    )
    credit = graph_route(
        "credit", "chain", shift, double, swap,
        ensemble("score", ["shift", "double"]),
        sequence("chain", ["score", "swap"], [{"value": "input"}]),
        model_name=GRAPH_MODEL, timeoutSeconds=5,
    )  # fmt: skip
    return module_starters.router(table(plain, credit))


@schema.parametrize()
@settings(max_examples=max(1, EXAMPLES // OPERATIONS), deadline=None, suppress_health_check=list(HealthCheck))
def test_generated_requests_get_no_server_error(case, router):
    response = case.call(base_url=router.url, timeout=10)
    generated.append(response.status_code)
    case.validate_response(response, checks=CHECKS)


@pytest.mark.parametrize("model_name", [PLAIN_MODEL, GRAPH_MODEL])
@pytest.mark.parametrize("datatype", [{}, [], None, 3])
def test_a_datatype_that_is_no_string_is_a_client_error(router, model_name, datatype):
    """Found by the generated requests: an object as datatype once made the model server answer 500."""
    body = {"inputs": [{"name": "input", "shape": [1, 2], "datatype": datatype, "data": [1.0, 2.0]}]}
    answer = httpx.post(f"{router.url}/v2/models/{model_name}/infer", json=body, timeout=10)
    assert answer.status_code == 400, answer.text
    assert "datatype" in answer.json()["error"]


def server_errors(metrics: str, name: str) -> list[str]:
    pattern = re.compile(rf'^{name}\{{[^}}]*code="5\d\d"[^}}]*\}} ([0-9.e+]+)$')
    return [line for line in metrics.splitlines() if (m := pattern.match(line)) and float(m.group(1)) > 0]


def test_router_counted_no_server_error_and_still_serves(router):
    """Runs after the generated requests: the router's own counters saw no 5xx, and it still answers."""
    assert generated, "the generated requests ran first"
    metrics = router.metrics()
    assert router.metric("mlrouter_requests_total") > 0
    assert server_errors(metrics, "mlrouter_requests_total") == []
    assert server_errors(metrics, "mlgraph_requests_total") == []
    print(f"\n{len(generated)} generated requests, statuses {sorted(set(generated))}")
    row = [1.0, 2.0]
    answer = httpx.post(f"{router.url}/v2/models/{GRAPH_MODEL}/infer", json=rows_request(row), timeout=10)
    assert answer.status_code == 200, answer.text
    mean = [(s + d) / 2 for s, d in zip(by_hand("shift", row), by_hand("double", row), strict=True)]
    assert value_rows(answer.json()) == [pytest.approx(by_hand("swap", mean))]
    answer = httpx.post(f"{router.url}/v2/models/{PLAIN_MODEL}/infer", json=rows_request(row), timeout=10)
    assert answer.status_code == 200, answer.text
    served = answer.headers["x-mlrollouts-variant"]
    assert value_rows(answer.json()) == [pytest.approx(by_hand(served, row))]
    assert router.proc.alive()
