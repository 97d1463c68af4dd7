"""The official ``kubernetes`` Python client against the emulator."""

from __future__ import annotations

import threading

import pytest
from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException

pytestmark = pytest.mark.integration


@pytest.fixture
def api_client(kubeconfig):
    with config.new_client_from_config(config_file=str(kubeconfig)) as api:
        yield api


def test_configmap_lifecycle(api_client):
    core = client.CoreV1Api(api_client)
    body = client.V1ConfigMap(metadata=client.V1ObjectMeta(name="a", labels={"app": "x"}), data={"k": "v"})
    created = core.create_namespaced_config_map("default", body)
    assert created.metadata.uid and created.metadata.resource_version
    with pytest.raises(ApiException) as conflict:
        core.create_namespaced_config_map("default", body)
    assert conflict.value.status == 409 and '"reason":"AlreadyExists"' in conflict.value.body.replace(" ", "")
    listed = core.list_namespaced_config_map("default", label_selector="app=x")
    assert [i.metadata.name for i in listed.items] == ["a"]
    patched = core.patch_namespaced_config_map("a", "default", {"data": {"k": "w"}})
    assert patched.data == {"k": "w"}
    core.delete_namespaced_config_map("a", "default")
    with pytest.raises(ApiException) as missing:
        core.read_namespaced_config_map("a", "default")
    assert missing.value.status == 404


def test_watch_stream_resumes(api_client):
    core = client.CoreV1Api(api_client)
    core.create_namespaced_config_map("default", {"metadata": {"name": "first"}})
    mark = core.list_namespaced_config_map("default").metadata.resource_version
    core.create_namespaced_config_map("default", {"metadata": {"name": "second"}})
    seen = []
    stream = watch.Watch().stream(
        core.list_namespaced_config_map, "default", resource_version=mark, timeout_seconds=1
    )
    for event in stream:
        seen.append((event["type"], event["object"].metadata.name))
    assert seen == [("ADDED", "second")]


def test_live_watch_sees_changes(api_client):
    core = client.CoreV1Api(api_client)
    seen: list[tuple[str, str]] = []
    ready = threading.Event()

    def consume():
        w = watch.Watch()
        for event in w.stream(core.list_namespaced_config_map, "default", timeout_seconds=2):
            seen.append((event["type"], event["object"].metadata.name))
            ready.set()

    core.create_namespaced_config_map("default", {"metadata": {"name": "existing"}})
    thread = threading.Thread(target=consume)
    thread.start()
    assert ready.wait(5)
    core.create_namespaced_config_map("default", {"metadata": {"name": "new"}})
    core.delete_namespaced_config_map("new", "default")
    thread.join(10)
    assert seen == [("ADDED", "existing"), ("ADDED", "new"), ("DELETED", "new")]


def test_custom_objects_and_status(api_client, widget_crd):
    custom = client.CustomObjectsApi(api_client)
    body = {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}, "spec": {"size": 1}}
    custom.create_namespaced_custom_object("example.com", "v1", "default", "widgets", body)
    status = custom.patch_namespaced_custom_object_status(
        "example.com", "v1", "default", "widgets", "w", {"status": {"phase": "Ready"}}
    )
    assert status["status"] == {"phase": "Ready"} and status["metadata"]["generation"] == 1
    with pytest.raises(ApiException) as invalid:
        custom.patch_namespaced_custom_object(
            "example.com", "v1", "default", "widgets", "w", {"spec": {"size": -5}}
        )
    assert invalid.value.status == 422 and "spec.size" in invalid.value.body


def test_apps_and_discovery(api_client):
    apps = client.AppsV1Api(api_client)
    body = {
        "metadata": {"name": "web"},
        "spec": {
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "m", "image": "i"}]},
            },
        },
    }
    created = apps.create_namespaced_deployment("default", body)
    assert created.spec.replicas == 1 and created.metadata.generation == 1
    groups = client.ApisApi(api_client).get_api_versions()
    assert "apps" in [g.name for g in groups.groups]
