"""The API emulator calls validating webhooks as a real API server does."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from mlrollouts.local.apiserver.admission import Attributes, rule_matches, selector_matches
from mlrollouts.local.apiserver.resources import BUILTIN_RESOURCES
from mlrollouts.local.apiserver.testing import apiserver  # noqa: F401
from support import free_port

CONFIGMAPS = next(rt for rt in BUILTIN_RESOURCES if rt.plural == "configmaps")
VWC = "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations"
CM = "/api/v1/namespaces/default/configmaps"


class FakeWebhook(BaseHTTPRequestHandler):
    """Denies a ConfigMap whose data has ``deny``, warns of every one; sleeps on ``slow``."""

    reviews: list[dict] = []

    def do_POST(self) -> None:
        review = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        FakeWebhook.reviews.append(review)
        data = (review["request"]["object"] or {}).get("data") or {}
        if "slow" in data:
            time.sleep(2)
        response = {
            "uid": review["request"]["uid"],
            "allowed": "deny" not in data,
            "warnings": ["looked at it"],
        }
        if "deny" in data:
            response["status"] = {"code": 422, "message": f"data.deny: {data['deny']}"}
        body = json.dumps(
            {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response}
        )
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # a caller that timed out
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body.encode())

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def webhook_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeWebhook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    FakeWebhook.reviews = []
    yield f"http://127.0.0.1:{server.server_address[1]}/validate"
    server.shutdown()


@pytest.fixture
def api(apiserver) -> Iterator[httpx.Client]:  # noqa: F811
    with httpx.Client(base_url=apiserver.url, timeout=10) as client:
        yield client


def configuration(url: str, failure_policy: str = "Fail", timeout: int = 5, **extra: object) -> dict:
    webhook = {
        "name": "check.example.com",
        "clientConfig": {"url": url},
        "rules": [
            {
                "apiGroups": [""],
                "apiVersions": ["v1"],
                "resources": ["configmaps"],
                "operations": ["CREATE", "UPDATE"],
            }
        ],
        "failurePolicy": failure_policy,
        "timeoutSeconds": timeout,
        "sideEffects": "None",
        "admissionReviewVersions": ["v1"],
        **extra,
    }
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": "check"},
        "webhooks": [webhook],
    }


def config_map(name: str, **data: str) -> dict:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": data}


def test_a_denial_is_a_4xx_with_the_webhooks_message_and_nothing_is_stored(api, webhook_url):
    assert api.post(VWC, json=configuration(webhook_url)).status_code == 201
    response = api.post(CM, json=config_map("bad", deny="not today"))
    assert response.status_code == 422
    assert response.json()["message"] == (
        'admission webhook "check.example.com" denied the request: data.deny: not today'
    )
    assert api.get(f"{CM}/bad").status_code == 404
    review = FakeWebhook.reviews[-1]
    assert review["apiVersion"] == "admission.k8s.io/v1" and review["kind"] == "AdmissionReview"
    request = review["request"]
    assert (request["operation"], request["namespace"], request["name"]) == ("CREATE", "default", "bad")
    assert request["resource"] == {"group": "", "version": "v1", "resource": "configmaps"}


def test_warnings_reach_the_client_and_updates_carry_the_old_object(api, webhook_url):
    api.post(VWC, json=configuration(webhook_url))
    created = api.post(CM, json=config_map("good", a="1"))
    assert created.status_code == 201
    assert created.headers.get_list("warning") == ['299 - "looked at it"']
    patched = api.patch(
        f"{CM}/good", json={"data": {"a": "2"}}, headers={"Content-Type": "application/merge-patch+json"}
    )
    assert patched.status_code == 200
    request = FakeWebhook.reviews[-1]["request"]
    assert request["operation"] == "UPDATE"
    assert (request["oldObject"]["data"], request["object"]["data"]) == ({"a": "1"}, {"a": "2"})
    refused = api.patch(
        f"{CM}/good", json={"data": {"deny": "x"}}, headers={"Content-Type": "application/merge-patch+json"}
    )
    assert refused.status_code == 422
    assert api.get(f"{CM}/good").json()["data"] == {"a": "2"}


def test_server_side_apply_of_a_new_object_is_a_create(api, webhook_url):
    api.post(VWC, json=configuration(webhook_url))
    response = api.patch(
        f"{CM}/applied?fieldManager=test",
        content=json.dumps(config_map("applied", deny="no")),
        headers={"Content-Type": "application/apply-patch+yaml"},
    )
    assert response.status_code == 422
    assert FakeWebhook.reviews[-1]["request"]["operation"] == "CREATE"


def test_failure_policy_decides_when_the_webhook_cannot_be_called(api):
    closed = f"http://127.0.0.1:{free_port()}/validate"
    api.post(VWC, json=configuration(closed, "Fail"))
    response = api.post(CM, json=config_map("a"))
    assert response.status_code == 500
    message = response.json()["message"]
    assert message.startswith('Internal error occurred: failed calling webhook "check.example.com": ')
    assert f'Post "{closed}"' in message
    api.put(f"{VWC}/check", json={**configuration(closed, "Ignore"), "metadata": {"name": "check"}})
    assert api.post(CM, json=config_map("b")).status_code == 201


def test_timeout_seconds_is_honoured(api, webhook_url):
    api.post(VWC, json=configuration(webhook_url, "Fail", timeout=1))
    started = time.monotonic()
    response = api.post(CM, json=config_map("slow", slow="1"))
    assert time.monotonic() - started < 1.9
    assert response.status_code == 500
    assert "context deadline exceeded (timeoutSeconds: 1)" in response.json()["message"]


def test_a_namespace_selector_skips_unselected_namespaces(api, webhook_url):
    selector = {"matchLabels": {"admission": "on"}}
    api.post(VWC, json=configuration(webhook_url, namespaceSelector=selector))
    assert api.post(CM, json=config_map("unchecked", deny="x")).status_code == 201
    api.post(
        "/api/v1/namespaces",
        json={
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": "checked", "labels": {"admission": "on"}},
        },
    )
    response = api.post("/api/v1/namespaces/checked/configmaps", json=config_map("c", deny="x"))
    assert response.status_code == 422


@pytest.mark.parametrize(
    ("rule", "subresource", "operation", "expected"),
    [
        (
            {"apiGroups": [""], "apiVersions": ["v1"], "resources": ["configmaps"], "operations": ["*"]},
            None,
            "CREATE",
            True,
        ),
        (
            {"apiGroups": ["*"], "apiVersions": ["*"], "resources": ["*"], "operations": ["UPDATE"]},
            None,
            "CREATE",
            False,
        ),
        (
            {"apiGroups": ["apps"], "apiVersions": ["v1"], "resources": ["configmaps"], "operations": ["*"]},
            None,
            "CREATE",
            False,
        ),
        (
            {"apiGroups": [""], "apiVersions": ["v1"], "resources": ["*"], "operations": ["*"]},
            "status",
            "UPDATE",
            False,
        ),
        (
            {"apiGroups": [""], "apiVersions": ["v1"], "resources": ["configmaps/*"], "operations": ["*"]},
            "status",
            "UPDATE",
            True,
        ),
        (
            {"apiGroups": [""], "apiVersions": ["v1"], "resources": ["*/status"], "operations": ["*"]},
            "status",
            "UPDATE",
            True,
        ),
        (
            {
                "apiGroups": [""],
                "apiVersions": ["v1"],
                "resources": ["configmaps"],
                "operations": ["*"],
                "scope": "Cluster",
            },
            None,
            "CREATE",
            False,
        ),
    ],
)
def test_rules_match_group_version_resource_and_operation(rule, subresource, operation, expected):
    attributes = Attributes(CONFIGMAPS, subresource, operation, "default", "x")
    assert rule_matches(rule, attributes) is expected


def test_label_selectors():
    labels = {"tier": "ml", "env": "prod"}
    assert selector_matches(None, labels)
    assert selector_matches({"matchLabels": {"tier": "ml"}}, labels)
    assert not selector_matches({"matchLabels": {"tier": "web"}}, labels)
    assert selector_matches(
        {"matchExpressions": [{"key": "env", "operator": "In", "values": ["prod", "qa"]}]}, labels
    )
    assert not selector_matches(
        {"matchExpressions": [{"key": "env", "operator": "NotIn", "values": ["prod"]}]}, labels
    )
    assert selector_matches({"matchExpressions": [{"key": "team", "operator": "DoesNotExist"}]}, labels)
    assert not selector_matches({"matchExpressions": [{"key": "team", "operator": "Exists"}]}, labels)
