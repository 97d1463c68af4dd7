from __future__ import annotations

import datetime

import pytest

from mlrollouts.local.apiserver.emulator import Target, parse_resource_path
from mlrollouts.local.apiserver.resources import Registry
from mlrollouts.local.apiserver.tables import human_duration, jsonpath_value, to_table


@pytest.mark.parametrize(
    ("path", "target"),
    [
        ("/api/v1", Target("", "v1")),
        ("/api/v1/namespaces", Target("", "v1", "namespaces")),
        ("/api/v1/namespaces/ns1", Target("", "v1", "namespaces", None, "ns1")),
        ("/api/v1/namespaces/ns1/status", Target("", "v1", "namespaces", None, "ns1", "status")),
        ("/api/v1/namespaces/ns1/pods", Target("", "v1", "pods", "ns1")),
        ("/api/v1/namespaces/ns1/pods/p/status", Target("", "v1", "pods", "ns1", "p", "status")),
        ("/apis/apps/v1/deployments", Target("apps", "v1", "deployments")),
        (
            "/apis/apps/v1/namespaces/x/deployments/d/scale",
            Target("apps", "v1", "deployments", "x", "d", "scale"),
        ),
        ("/version", None),
        ("/apis/apps", None),
    ],
)
def test_parse_resource_path(path, target):
    assert parse_resource_path(path) == target


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (5, "5s"),
        (119, "119s"),
        (200, "3m20s"),
        (600, "10m"),
        (3 * 3600 + 60, "3h1m"),
        (30 * 3600, "30h"),
        (3 * 86400 + 3600, "3d1h"),
        (40 * 86400, "40d"),
        (800 * 86400, "2y"),
    ],
)
def test_human_duration(seconds, text):
    assert human_duration(datetime.timedelta(seconds=seconds)) == text


def test_jsonpath_and_table_for_builtins():
    obj = {
        "metadata": {"name": "w", "creationTimestamp": "2020-01-01T00:00:00Z"},
        "status": {"conditions": [{"type": "Ready", "status": "True"}]},
        "data": {"a": "1"},
    }
    assert jsonpath_value(obj, '.status.conditions[?(@.type=="Ready")].status') == "True"
    assert jsonpath_value(obj, ".status.missing") is None
    rt = Registry().get("", "v1", "configmaps")
    table = to_table(rt, [obj], {"resourceVersion": "1"})
    assert [c["name"] for c in table["columnDefinitions"]] == ["Name", "Data", "Age"]
    assert table["rows"][0]["cells"][:2] == ["w", 1]
