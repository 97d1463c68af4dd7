"""The API emulator's fault specification (``--faults``) and the operator client's answer to faults."""

from __future__ import annotations

import httpx
import pytest

from mlrollouts.controller.kube import RETRY_ATTEMPTS, RETRY_WAIT_MAX, Call, retry_after
from mlrollouts.local.apiserver.faults import FaultSpec, FaultSpecError, parse_faults


def test_the_documented_example_parses():
    spec = parse_faults("conflict=0.1,throttle=0.05,error=0.05,drop-watch=30s,slow=0.1:0.5s")
    assert spec == FaultSpec(
        conflict=0.1, throttle=0.05, error=0.05, drop_watch=30.0, slow=0.1, slow_delay=0.5
    )
    assert spec


def test_options_and_units():
    spec = parse_faults(
        "error=1, slow=0.5:250ms, retry-after=2s, agents=kopf|mlrollouts, paths=/status$, seed=7"
    )
    assert (spec.error, spec.slow_delay, spec.retry_after) == (1.0, 0.25, 2)
    assert spec.agents == ("kopf", "mlrollouts") and spec.paths == "/status$" and spec.seed == 7
    assert not parse_faults("") and not parse_faults("seed=3")  # no fault: nothing to inject


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("conflict=2", "conflict"),
        ("throttle=often", "throttle"),
        ("slow=0.1", "slow"),
        ("slow=0.1:soon", "slow"),
        ("drop-watch=0s", "drop-watch"),
        ("seed=x", "seed"),
        ("paths=[", "paths"),
        ("explode=1", "explode"),
        ("error", "error"),
    ],
)
def test_bad_input_names_the_field(text, field):
    with pytest.raises(FaultSpecError, match=f"^{field}:"):
        parse_faults(text)


def response(code: int, **headers: str) -> httpx.Response:
    return httpx.Response(code, headers=headers)


GET = Call("GET", "/api/v1/namespaces/ml/configmaps/x")
PATCH = Call("PATCH", "/apis/apps/v1/namespaces/ml/deployments/x", body={"spec": {"replicas": 1}})
NAMED_CREATE = Call("POST", "/api/v1/namespaces/ml/events", body={"metadata": {"name": "e.1"}})
NAMELESS_CREATE = Call("POST", "/api/v1/namespaces/ml/events", body={"metadata": {"generateName": "e-"}})


def test_throttling_waits_as_the_server_asks_and_for_no_longer_than_the_cap():
    assert retry_after(NAMELESS_CREATE, response(429, **{"Retry-After": "2"}), 0) == 2.0
    assert retry_after(PATCH, response(429, **{"Retry-After": "600"}), 0) == RETRY_WAIT_MAX
    assert retry_after(GET, response(429), 1) == pytest.approx(0.4)  # no header: back-off


def test_a_plain_server_error_is_retried_only_where_a_repeat_is_harmless():
    assert retry_after(GET, response(500), 0) is not None
    assert retry_after(PATCH, response(503), 0) is not None
    assert retry_after(NAMED_CREATE, response(500), 0) is not None
    assert retry_after(NAMELESS_CREATE, response(500), 0) is None
    assert retry_after(NAMELESS_CREATE, response(503, **{"Retry-After": "1"}), 0) == 1.0


def test_conflicts_and_client_errors_are_answered_and_retries_end():
    assert retry_after(PATCH, response(409), 0) is None
    assert retry_after(GET, response(404), 0) is None
    assert retry_after(GET, response(500), RETRY_ATTEMPTS - 1) is None
