"""Which upstream URLs name a Service, and which endpoint addresses serve a Service port."""

from __future__ import annotations

import pytest

from mlserving.router.resolve import ready_endpoints, service_of


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://iris-abc.default.svc:80", ("default", "iris-abc", 80)),
        ("http://iris-abc.team-a.svc.cluster.local:8080/base", ("team-a", "iris-abc", 8080)),
        ("http://iris.prod.svc", ("prod", "iris", 80)),
        ("https://iris.prod.svc", ("prod", "iris", 443)),
        ("http://127.0.0.1:8080", None),
        ("http://iris:8080", None),
        ("http://iris.example.com", None),
    ],
)
def test_service_of(url, expected):
    assert service_of(url) == expected


SERVICE = {
    "spec": {"ports": [{"name": "http", "port": 80, "targetPort": "http"}, {"name": "metrics", "port": 9090}]}
}


def test_ready_endpoints_pick_the_named_port_and_skip_not_ready_addresses():
    endpoints = {
        "subsets": [
            {
                "addresses": [{"ip": "10.0.0.1"}],
                "ports": [{"name": "http", "port": 8080}, {"name": "metrics", "port": 9000}],
            },
            {"addresses": [{"ip": "127.0.0.1"}], "ports": [{"name": "http", "port": 41001}]},
            {"notReadyAddresses": [{"ip": "127.0.0.1"}], "ports": [{"name": "http", "port": 41002}]},
        ]
    }
    assert ready_endpoints(SERVICE, endpoints, 80) == [("10.0.0.1", 8080), ("127.0.0.1", 41001)]
    assert ready_endpoints(SERVICE, endpoints, 9090) == [("10.0.0.1", 9000)]


def test_a_port_the_service_does_not_have_resolves_to_nothing():
    endpoints = {"subsets": [{"addresses": [{"ip": "10.0.0.1"}], "ports": [{"name": "http", "port": 8080}]}]}
    assert ready_endpoints(SERVICE, endpoints, 81) == []


def test_single_unnamed_port():
    service = {"spec": {"ports": [{"port": 80}]}}
    endpoints = {"subsets": [{"addresses": [{"ip": "127.0.0.1"}], "ports": [{"port": 40000}]}]}
    assert ready_endpoints(service, endpoints, 80) == [("127.0.0.1", 40000)]
