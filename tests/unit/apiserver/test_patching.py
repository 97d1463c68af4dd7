from __future__ import annotations

import pytest

from mlrollouts.local.apiserver.patching import (
    PatchError,
    apply_merge,
    json_patch,
    merge_patch,
    strategic_merge_patch,
)


def test_merge_patch_rfc7386():
    target = {"a": 1, "b": {"c": 2, "d": 3}, "l": [1, 2]}
    assert merge_patch(target, {"a": None, "b": {"c": 5}, "l": [3]}) == {"b": {"c": 5, "d": 3}, "l": [3]}
    assert target == {"a": 1, "b": {"c": 2, "d": 3}, "l": [1, 2]}  # input untouched


def test_json_patch_and_its_errors():
    assert json_patch({"a": [1]}, [{"op": "add", "path": "/a/-", "value": 2}]) == {"a": [1, 2]}
    with pytest.raises(PatchError):
        json_patch({"a": 1}, [{"op": "test", "path": "/a", "value": 2}])
    with pytest.raises(PatchError):
        json_patch({"a": 1}, {"op": "add"})


POD_SPEC = {
    "containers": [
        {"name": "a", "image": "a:1", "ports": [{"containerPort": 80}], "env": [{"name": "X", "value": "1"}]},
        {"name": "b", "image": "b:1"},
    ],
    "volumes": [{"name": "v1", "emptyDir": {}}],
}


def test_strategic_merge_by_keys():
    patch = {
        "containers": [{"name": "a", "env": [{"name": "Y", "value": "2"}], "ports": [{"containerPort": 81}]}]
    }
    result = strategic_merge_patch(POD_SPEC, patch)
    assert [c["name"] for c in result["containers"]] == ["a", "b"]
    assert result["containers"][0]["env"] == [{"name": "X", "value": "1"}, {"name": "Y", "value": "2"}]
    assert result["containers"][0]["ports"] == [{"containerPort": 80}, {"containerPort": 81}]


def test_service_ports_merge_by_port():
    spec = {"ports": [{"port": 80, "name": "http"}, {"port": 443, "name": "https"}]}
    result = strategic_merge_patch(spec, {"ports": [{"port": 443, "targetPort": 8443}]})
    assert result["ports"] == [
        {"port": 80, "name": "http"},
        {"port": 443, "name": "https", "targetPort": 8443},
    ]


def test_strategic_merge_directives():
    deleted = strategic_merge_patch(POD_SPEC, {"containers": [{"name": "b", "$patch": "delete"}]})
    assert [c["name"] for c in deleted["containers"]] == ["a"]
    replaced = strategic_merge_patch(
        POD_SPEC, {"containers": [{"$patch": "replace"}, {"name": "c", "image": "c"}]}
    )
    assert replaced["containers"] == [{"name": "c", "image": "c"}]
    ordered = strategic_merge_patch(POD_SPEC, {"$setElementOrder/containers": [{"name": "b"}, {"name": "a"}]})
    assert [c["name"] for c in ordered["containers"]] == ["b", "a"]
    retained = strategic_merge_patch(
        {"strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}}},
        {"strategy": {"$retainKeys": ["type"], "type": "Recreate"}},
    )
    assert retained == {"strategy": {"type": "Recreate"}}
    finalizers = strategic_merge_patch({"finalizers": ["a", "b"]}, {"finalizers": ["c"]})
    assert finalizers == {"finalizers": ["a", "b", "c"]}
    removed = strategic_merge_patch(
        {"finalizers": ["a", "b"]}, {"$deleteFromPrimitiveList/finalizers": ["a"]}
    )
    assert removed == {"finalizers": ["b"]}
    unkeyed = strategic_merge_patch({"args": ["x", "y"]}, {"args": ["z"]})
    assert unkeyed == {"args": ["z"]}
    assert strategic_merge_patch({"a": {"b": 1}}, {"a": {"$patch": "replace", "c": 2}}) == {"a": {"c": 2}}
    assert strategic_merge_patch({"a": {"b": 1}, "k": 1}, {"a": None}) == {"k": 1}


def test_strategic_merge_needs_merge_keys():
    with pytest.raises(PatchError):
        strategic_merge_patch(POD_SPEC, {"containers": [{"image": "nameless"}]})


def test_apply_merge_drops_fields_the_manager_stopped_applying():
    live = {"data": {"mine": "1", "dropped": "2", "theirs": "3"}}
    previous = {"data": {"mine": "1", "dropped": "2"}}
    result = apply_merge(live, {"data": {"mine": "9"}}, previous, strategic=False)
    assert result == {"data": {"mine": "9", "theirs": "3"}}
    containers = {"spec": {"containers": [{"name": "a"}, {"name": "b"}, {"name": "other"}]}}
    prev = {"spec": {"containers": [{"name": "a"}, {"name": "b"}]}}
    out = apply_merge(
        containers, {"spec": {"containers": [{"name": "a", "image": "x"}]}}, prev, strategic=True
    )
    assert out["spec"]["containers"] == [{"name": "a", "image": "x"}, {"name": "other"}]
