"""Generated requests against a real router: a plain route and a composite model over real model servers.

Whatever arrives, the router answers a JSON error of its own (4xx for the client's mistakes) or the
graph's answer, never a 5xx of its own making, and keeps serving correct answers afterwards.
"""

from __future__ import annotations

import os

import httpx
import pytest
from graph_testing import by_hand, ensemble, graph_route, model, rows_request, sequence, value_rows
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from router_testing import route, table, variant

pytestmark = pytest.mark.integration

# ``FUZZ_EXAMPLES`` (``make fuzz``: 10 000) is shared by the three generated tests below.
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "240"))
FUZZ = settings(max_examples=max(80, EXAMPLES // 3), deadline=None, suppress_health_check=list(HealthCheck))
CLIENT_ERRORS = {400, 404, 405, 413, 422}

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=5),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)
numbers = st.floats(allow_nan=False, allow_infinity=False, width=32) | st.integers(-(2**40), 2**40)
# Tensors that often look right (the graph's input name, FP32 rows of two) so that requests get past
# the graph's own checks into switches, components and combiners.
tensors = st.fixed_dictionaries(
    {},
    optional={
        "name": st.sampled_from(["input", "input", "x", ""]) | json_values,
        "shape": st.sampled_from([[1, 2], [2, 2], [0, 2], [3, 2], [2], [1, 3]])
        | st.lists(st.integers(min_value=-2, max_value=10**7), max_size=4)
        | json_values,
        "datatype": st.sampled_from(["FP32", "FP32", "FP64", "INT64", "BOOL", "BYTES", "int"]) | json_values,
        "data": st.lists(numbers, max_size=8)
        | st.lists(st.lists(numbers, min_size=2, max_size=2), max_size=3)
        | json_values,
        "parameters": json_values,
    },
)
requests_ = st.fixed_dictionaries(
    {"inputs": st.lists(tensors, min_size=1, max_size=2) | json_values},
    optional={"id": json_values, "outputs": json_values, "parameters": json_values},
)


@pytest.fixture(scope="module")
def router(affine, module_starters):
    """One router for the whole module: the last test checks it after every generated request."""
    plain = module_starters.upstream("plain")
    shift, double, swap = (model(n, affine[n].url) for n in ("shift", "double", "swap"))
    switch = {
        "name": "entry",
        "type": "Switch",
        "cases": [{"when": {"feature": 0, "op": "gt", "value": 0}, "node": "score"}],
        "default": "chain",
    }
    return module_starters.router(
        table(
            route(variants=[variant("v", plain, weight=1)]),
            graph_route(
                "credit", "entry", shift, double, swap,
                ensemble("score", ["shift", "double"], type="weightedMean", weights=[1, 3]),
                sequence("chain", ["shift", "swap"], [{"value": "input"}]),
                switch, model_name="credit-score", timeoutSeconds=5,
            ),
        )
    )  # fmt: skip


def assert_still_serving(router) -> None:
    answer = httpx.post(
        f"{router.url}/v2/models/credit-score/infer", json=rows_request([-1.0, 4.0]), timeout=10
    )
    assert answer.status_code == 200, answer.text
    assert value_rows(answer.json()) == [by_hand("swap", by_hand("shift", [-1.0, 4.0]))]
    assert router.proc.alive()


def check_answer(response: httpx.Response) -> None:
    assert response.status_code == 200 or response.status_code in CLIENT_ERRORS, response.text
    body = response.json()
    if response.status_code != 200:
        assert isinstance(body["error"], str) and body["error"], body


@FUZZ
@given(body=requests_, model_name=st.sampled_from(["credit-score", "credit-score", "iris"]))
def test_generated_v2_requests_never_break_the_router(router, body, model_name):
    response = httpx.post(f"{router.url}/v2/models/{model_name}/infer", json=body, timeout=10)
    if model_name == "iris":  # the plain upstream answers anything: the router passes it through
        assert response.status_code == 200 and response.headers["x-mlrollouts-variant"] == "v"
        return
    check_answer(response)
    if response.status_code == 200:
        assert response.json()["outputs"][0]["name"] == "value"
    elif "node" in response.json():  # a component refused the input: the client sees which one
        assert response.json()["node"] in ("entry", "score", "chain", "shift", "double", "swap")


@FUZZ
@given(
    raw=st.binary(max_size=64) | json_values.map(lambda v: httpx.Request("POST", "/", json=v).content),
    path=st.sampled_from(
        [
            "/v2/models/credit-score/infer",
            "/v1/models/credit-score:predict",
            "/v2/models/credit-score/feedback",
        ]
    ),
)
def test_generated_bodies_on_every_graph_path_get_a_json_answer(router, raw, path):
    response = httpx.post(
        f"{router.url}{path}", content=raw, headers={"content-type": "application/json"}, timeout=10
    )
    check_answer(response)


@FUZZ
@given(
    tail=st.text(
        alphabet=st.characters(min_codepoint=33, max_codepoint=126, exclude_characters="?#%"), max_size=12
    ),
    method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "HEAD"]),
)
def test_generated_paths_and_methods_under_the_graph(router, tail, method):
    response = httpx.request(method, f"{router.url}/v2/models/credit-score/{tail}", timeout=10)
    assert response.status_code == 200 or response.status_code in CLIENT_ERRORS, response.text


def deep(depth: int) -> str:
    return "[" * depth + "1.0" + "]" * depth


def tensor_body(shape: list[int], data: str) -> str:
    """A request with ``data`` as written (JSON encoders refuse to write some of these)."""
    head = '{"inputs": [{"name": "input", "datatype": "FP32", "shape": ' + str(shape)
    return head + ', "data": ' + data + "}]}"


HOSTILE = {
    "data nested too deep": tensor_body([1, 2], deep(500)),
    "deep lists inside flat data": tensor_body([2], f"[1.0, {deep(400)}]"),
    "a billion rows of two values": tensor_body([10**9, 2], "[[1.0, 2.0]]"),
    "rows without values": tensor_body([10**9, 0], "[]"),
    "JSON nested past the decoder's limit": deep(2000),
    "null to switch on": tensor_body([1, 2], "[null, 1]"),
}


@pytest.mark.parametrize("body", HOSTILE.values(), ids=HOSTILE.keys())
@pytest.mark.parametrize("path", ["/v2/models/credit-score/infer", "/v1/models/credit-score:predict"])
def test_hostile_bodies_get_a_client_error(router, body, path):
    response = httpx.post(f"{router.url}{path}", content=body, timeout=10)
    assert response.status_code in CLIENT_ERRORS, response.text
    assert response.json()["error"]


def test_the_router_still_serves_after_every_generated_request(router):
    body = {"instances": [[2.0, 1.0]]}
    predicted = httpx.post(f"{router.url}/v1/models/credit-score:predict", json=body, timeout=10)
    expected = [
        (s + 3 * d) / 4
        for s, d in zip(by_hand("shift", [2.0, 1.0]), by_hand("double", [2.0, 1.0]), strict=True)
    ]
    assert predicted.status_code == 200 and predicted.json()["predictions"] == [pytest.approx(expected)]
    assert_still_serving(router)
