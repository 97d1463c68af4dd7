"""Watches over raw HTTP: initial state, resume from a resourceVersion, 410 Gone, timeouts, bookmarks."""

from __future__ import annotations

import json

import httpx
import pytest

from mlrollouts.local.apiserver import ApiServer

pytestmark = pytest.mark.integration

CMS = "/api/v1/namespaces/default/configmaps"
MERGE = {"Content-Type": "application/merge-patch+json"}


def watch_events(http: httpx.Client, path: str, count: int | None = None, **params) -> list[dict]:
    """The first ``count`` events of a watch, or all until the server ends it after ``timeoutSeconds``.

    Events arrive in resourceVersion order, so a replay of older changes would show up first.
    """
    params = {"watch": "true", "timeoutSeconds": "1" if count is None else "10", **params}
    events: list[dict] = []
    with http.stream("GET", path, params=params) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if line.strip():
                events.append(json.loads(line))
            if count is not None and len(events) >= count:
                break
    return events


def summary(events: list[dict]) -> list[tuple[str, str]]:
    return [(e["type"], e["object"].get("metadata", {}).get("name", "")) for e in events]


def test_watch_without_version_starts_with_current_state_then_streams(http, apiserver):
    http.post(CMS, json={"metadata": {"name": "before"}})
    with (
        httpx.Client(base_url=apiserver.url, verify=False, timeout=10) as other,
        http.stream("GET", CMS, params={"watch": "true", "timeoutSeconds": "10"}) as response,
    ):
        lines = response.iter_lines()
        first = json.loads(next(lines))
        assert (first["type"], first["object"]["metadata"]["name"]) == ("ADDED", "before")
        other.post(CMS, json={"metadata": {"name": "after"}})
        other.patch(f"{CMS}/after", json={"data": {"k": "v"}}, headers=MERGE)
        other.delete(f"{CMS}/after")
        rest = [json.loads(next(lines)) for _ in range(3)]
    assert summary(rest) == [("ADDED", "after"), ("MODIFIED", "after"), ("DELETED", "after")]
    versions = [int(e["object"]["metadata"]["resourceVersion"]) for e in rest]
    assert versions == sorted(versions)


def test_watch_resumes_from_resource_version_without_replay(http):
    http.post(CMS, json={"metadata": {"name": "old"}})
    mark = http.get(CMS).json()["metadata"]["resourceVersion"]
    http.post(CMS, json={"metadata": {"name": "new"}})
    http.patch(f"{CMS}/old", json={"data": {"k": "v"}}, headers=MERGE)
    http.post(
        "/apis/apps/v1/namespaces/default/deployments", json={"metadata": {"name": "other-kind"}, "spec": {}}
    )
    events = watch_events(http, CMS, count=2, resourceVersion=mark)
    assert summary(events) == [("ADDED", "new"), ("MODIFIED", "old")]


def test_watch_from_compacted_version_is_410_gone(http, apiserver):
    http.post(CMS, json={"metadata": {"name": "a"}})
    mark = http.get(CMS).json()["metadata"]["resourceVersion"]
    http.post(CMS, json={"metadata": {"name": "b"}})
    apiserver.compact()
    events = watch_events(http, CMS, count=1, resourceVersion=mark)
    assert events[0]["type"] == "ERROR"
    assert events[0]["object"]["code"] == 410 and events[0]["object"]["reason"] == "Expired"
    # The current version is still fine to watch from.
    current = http.get(CMS).json()["metadata"]["resourceVersion"]
    assert watch_events(http, CMS, resourceVersion=current) == []


def test_watch_from_version_older_than_the_history_is_410():
    with ApiServer(history_limit=3) as api, httpx.Client(base_url=api.url, verify=False, timeout=10) as http:
        mark = http.get(CMS).json()["metadata"]["resourceVersion"]
        for index in range(5):
            http.post(CMS, json={"metadata": {"name": f"c{index}"}})
        assert watch_events(http, CMS, count=1, resourceVersion=mark)[0]["object"]["code"] == 410


def test_watch_respects_timeout_seconds(http):
    # The stream ends by itself (the read timeout of the client is longer than the watch timeout).
    assert watch_events(http, CMS, timeoutSeconds="1") == []


def test_watch_label_selector_sees_objects_enter_and_leave(http):
    mark = http.get(CMS).json()["metadata"]["resourceVersion"]
    http.post(CMS, json={"metadata": {"name": "a", "labels": {"team": "x"}}})
    http.post(CMS, json={"metadata": {"name": "b", "labels": {"team": "y"}}})
    http.patch(f"{CMS}/a", json={"metadata": {"labels": {"team": "y"}}}, headers=MERGE)
    http.patch(f"{CMS}/b", json={"metadata": {"labels": {"team": "x"}}}, headers=MERGE)
    events = watch_events(http, CMS, count=3, resourceVersion=mark, labelSelector="team=x")
    assert summary(events) == [("ADDED", "a"), ("DELETED", "a"), ("ADDED", "b")]


def test_watch_field_selector_by_name(http):
    mark = http.get(CMS).json()["metadata"]["resourceVersion"]
    http.post(CMS, json={"metadata": {"name": "a"}})
    http.post(CMS, json={"metadata": {"name": "b"}})
    events = watch_events(
        http, "/api/v1/configmaps", count=1, resourceVersion=mark, fieldSelector="metadata.name=b"
    )
    assert summary(events) == [("ADDED", "b")]


def test_watch_namespace_scope(http):
    http.post("/api/v1/namespaces", json={"metadata": {"name": "other"}})
    mark = http.get(CMS).json()["metadata"]["resourceVersion"]
    http.post("/api/v1/namespaces/other/configmaps", json={"metadata": {"name": "elsewhere"}})
    http.post(CMS, json={"metadata": {"name": "here"}})
    assert summary(watch_events(http, CMS, count=1, resourceVersion=mark)) == [("ADDED", "here")]
    everywhere = watch_events(http, "/api/v1/configmaps", count=2, resourceVersion=mark)
    assert summary(everywhere) == [("ADDED", "elsewhere"), ("ADDED", "here")]


def test_bookmarks_when_asked():
    with (
        ApiServer(bookmark_interval=0.2) as api,
        httpx.Client(base_url=api.url, verify=False, timeout=10) as http,
    ):
        http.post(CMS, json={"metadata": {"name": "a"}})
        current = http.get(CMS).json()["metadata"]["resourceVersion"]
        with_bookmarks = watch_events(http, CMS, count=2, resourceVersion=current, allowWatchBookmarks="true")
        assert [e["type"] for e in with_bookmarks] == ["BOOKMARK", "BOOKMARK"]
        assert with_bookmarks[0]["object"]["kind"] == "ConfigMap"
        assert with_bookmarks[0]["object"]["metadata"]["resourceVersion"] == current
        assert watch_events(http, CMS, resourceVersion=current) == []


def test_streaming_list_ends_initial_events_with_a_bookmark(http):
    http.post(CMS, json={"metadata": {"name": "a"}})
    events = watch_events(
        http,
        CMS,
        count=2,
        sendInitialEvents="true",
        allowWatchBookmarks="true",
        resourceVersionMatch="NotOlderThan",
    )
    assert events[0]["type"] == "ADDED"
    bookmark = events[1]
    assert bookmark["type"] == "BOOKMARK"
    assert bookmark["object"]["metadata"]["annotations"] == {"k8s.io/initial-events-end": "true"}


def test_watch_as_table_for_kubectl_get_watch(http):
    mark = http.get(CMS).json()["metadata"]["resourceVersion"]
    http.post(CMS, json={"metadata": {"name": "a"}, "data": {"k": "v"}})
    http.post(CMS, json={"metadata": {"name": "b"}})
    accept = {"Accept": "application/json;as=Table;g=meta.k8s.io;v=v1,application/json"}
    params = {"watch": "true", "resourceVersion": mark, "timeoutSeconds": "10"}
    with http.stream("GET", CMS, params=params, headers=accept) as response:
        lines = response.iter_lines()
        first, second = json.loads(next(lines)), json.loads(next(lines))
    assert first["object"]["kind"] == "Table"
    assert [c["name"] for c in first["object"]["columnDefinitions"]] == ["Name", "Data", "Age"]
    assert first["object"]["rows"][0]["cells"][:2] == ["a", 1]
    assert second["object"]["columnDefinitions"] == [] and second["object"]["rows"][0]["cells"][0] == "b"
