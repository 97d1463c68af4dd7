"""Outlier detection tick by tick, with a clock the test moves."""

from __future__ import annotations

import pytest

from mlserving.router.outliers import OutlierDetector
from mlserving.router.table import OutlierDetection, RouteTable, RouteTableError
from mlserving.router.upstream import Endpoint

A, B, C = (Endpoint.parse(f"http://10.0.0.{i}:8080") for i in (1, 2, 3))
POLICY = OutlierDetection(consecutive_failures=2, base_ejection_seconds=10, max_ejection_seconds=25)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def detector(clock: Clock) -> OutlierDetector:
    return OutlierDetector(clock=clock)


def fail(detector: OutlierDetector, endpoint: Endpoint, upstreams=(A, B)) -> bool:
    detector.begin(endpoint)
    return detector.end(endpoint, False, upstreams, POLICY)


def succeed(detector: OutlierDetector, endpoint: Endpoint, upstreams=(A, B)) -> bool:
    detector.begin(endpoint)
    return detector.end(endpoint, True, upstreams, POLICY)


def test_consecutive_failures_eject_and_a_success_in_between_resets(detector):
    assert not fail(detector, A)
    assert not succeed(detector, A)
    assert not fail(detector, A)
    assert fail(detector, A)
    assert detector.ejected([A, B]) == [A.url]
    assert all(detector.attempts((A, B), start)[0] is B for start in range(4))


def test_ejection_grows_with_each_failed_probation_up_to_the_maximum(detector, clock):
    fail(detector, A), fail(detector, A)
    lengths = []
    for _ in range(3):
        ejected_at = clock.now
        while detector.ejected([A, B]):
            clock.now += 1
        lengths.append(clock.now - ejected_at)
        first, _ = detector.attempts((A, B), 0)
        assert first is A  # probation: the endpoint gets one request
        assert detector.attempts((A, B), 0)[0] is B  # ...and only one at a time
        detector.begin(A)
        assert detector.end(A, False, (A, B), POLICY)  # one failure on probation ejects again
    assert lengths == [10, 20, 25]


def test_a_success_on_probation_restores_the_endpoint(detector, clock):
    fail(detector, A), fail(detector, A)
    clock.now += 10
    assert detector.attempts((A, B), 0)[0] is A
    detector.begin(A)
    assert not detector.end(A, True, (A, B), POLICY)
    assert detector.ejected([A, B]) == []
    assert {detector.attempts((A, B), start)[0] for start in range(2)} == {A, B}
    assert not fail(detector, A)  # back to counting from zero


def test_the_last_endpoints_are_never_all_ejected(detector):
    fail(detector, A), fail(detector, A)
    assert not fail(detector, B) and not fail(detector, B)  # 50 % of two: one at most
    assert detector.ejected([A, B]) == [A.url]
    assert not fail(detector, C, (C,)) and not fail(detector, C, (C,))  # alone: nowhere else to go
    assert detector.ejected([C]) == []


def test_busy_endpoints_are_avoided_before_any_failure(detector):
    detector.begin(A)
    detector.begin(A)
    assert [detector.attempts((A, B, C), start)[0] for start in range(3)] == [B, B, C]


def test_outcomes_that_say_nothing_about_the_endpoint_change_nothing(detector):
    fail(detector, A)
    detector.begin(A)
    assert not detector.end(A, None, (A, B), POLICY)
    assert fail(detector, A)  # still two in a row


def test_forgotten_endpoints_keep_those_with_requests_in_flight(detector):
    fail(detector, A)
    detector.begin(B)
    detector.retain([C.url])
    assert detector.state(B).in_flight == 1
    assert detector.state(A).failures == 0


def test_route_table_checks_the_ejection_bounds():
    route = {"name": "r", "model": "m", "variants": [{"name": "v", "upstreams": ["http://a:1"], "weight": 1}]}
    table = RouteTable.from_dict({"routes": [route]})
    assert table.routes[0].outlier_detection.consecutive_failures == 5
    bad = {**route, "outlierDetection": {"baseEjectionSeconds": 60, "maxEjectionSeconds": 30}}
    with pytest.raises(RouteTableError, match=r"routes\.0\.outlierDetection: .*maxEjectionSeconds"):
        RouteTable.from_dict({"routes": [bad]})
    with pytest.raises(RouteTableError, match=r"routes\.0\.outlierDetection\.consecutiveFailures"):
        RouteTable.from_dict({"routes": [{**route, "outlierDetection": {"consecutiveFailures": 0}}]})
