"""Every built object is a valid Kubernetes object and carries the contract's names and labels."""

from __future__ import annotations

import base64

import pytest
from k8s_validation import validate_builtin, validate_http_route

from mlrollouts.builders import (
    Owner,
    ParentRef,
    ServingRevision,
    all_revisions_service,
    canary_ingress,
    http_route,
    route_table_configmap,
    router_deployment,
    router_role,
    router_role_binding,
    router_service,
    router_service_account,
    serving_deployment,
    serving_service,
    signing_key_secret,
    stable_ingress,
)
from mlrollouts.rollout.revision import revision_hash

OWNER = Owner(name="iris", namespace="ml", uid="0b6c8f3e-1111-4222-8333-444455556666")


def _rev(**kw):
    return ServingRevision(
        owner=OWNER, revision="abc123def0", model_name="iris", model_uri="s3://m/iris/2", **kw
    )


def _container(deployment):
    return deployment["spec"]["template"]["spec"]["containers"][0]


def test_serving_deployment_is_valid_and_named_by_revision():
    dep = serving_deployment(_rev(replicas=3))
    validate_builtin(dep)
    assert dep["metadata"]["name"] == "iris-abc123def0"
    assert dep["metadata"]["namespace"] == "ml"
    assert dep["spec"]["replicas"] == 3
    labels = dep["spec"]["template"]["metadata"]["labels"]
    assert labels["app.kubernetes.io/managed-by"] == "mlrollouts"
    assert labels["mlrollouts.io/owner"] == "ModelDeployment.iris"
    assert labels["mlrollouts.io/revision"] == "abc123def0"
    selector = dep["spec"]["selector"]["matchLabels"]
    assert selector.items() <= labels.items()
    assert dep["metadata"]["ownerReferences"][0]["uid"] == OWNER.uid
    assert dep["metadata"]["ownerReferences"][0]["controller"] is True


def test_serving_container_runs_the_model_server_with_its_identity():
    c = _container(serving_deployment(_rev(model_format="onnx", env={"EXTRA": "1"})))
    assert c["command"] == ["mlserving"]
    args = c["args"]
    assert args[0] == "serve"
    assert args[args.index("--model-name") + 1] == "iris"
    assert args[args.index("--model-uri") + 1] == "s3://m/iris/2"
    assert args[args.index("--format") + 1] == "onnx"
    env = {e["name"]: e["value"] for e in c["env"]}
    assert env == {"MLSERVING_MODEL": "iris", "MLSERVING_REVISION": "abc123def0", "EXTRA": "1"}
    assert c["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert c["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"


def test_serving_pods_are_locked_down_with_a_writable_tmp():
    dep = serving_deployment(_rev())
    pod = dep["spec"]["template"]["spec"]
    c = _container(dep)
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    assert c["securityContext"]["capabilities"]["drop"] == ["ALL"]
    tmp = next(v for v in pod["volumes"] if v["name"] == "tmp")
    assert "emptyDir" in tmp
    assert {"name": "tmp", "mountPath": "/tmp"} in c["volumeMounts"]
    ann = dep["spec"]["template"]["metadata"]["annotations"]
    assert ann["prometheus.io/scrape"] == "true"
    assert ann["prometheus.io/port"] == "8080"


def test_replicas_override_scales_a_revision_down():
    assert serving_deployment(_rev(replicas=4), replicas=0)["spec"]["replicas"] == 0


def test_resources_are_passed_through_and_validated():
    res = {"requests": {"cpu": "250m", "memory": "512Mi"}, "limits": {"cpu": "1", "memory": "1Gi"}}
    dep = serving_deployment(_rev(resources=res))
    validate_builtin(dep)
    assert _container(dep)["resources"] == res


def test_an_invalid_field_is_caught_by_the_validator():
    dep = serving_deployment(_rev())
    dep["spec"]["replicas"] = "three"
    with pytest.raises(AssertionError, match="spec/replicas"):
        validate_builtin(dep)


def test_revision_service_selects_only_its_revision():
    svc = serving_service(OWNER, "abc123def0")
    validate_builtin(svc)
    assert svc["metadata"]["name"] == "iris-abc123def0"
    assert svc["spec"]["selector"]["mlrollouts.io/revision"] == "abc123def0"
    assert svc["spec"]["ports"][0]["targetPort"] == "http"


def test_all_revisions_service_spans_revisions():
    svc = all_revisions_service(OWNER)
    validate_builtin(svc)
    assert svc["metadata"]["name"] == "iris"
    assert "mlrollouts.io/revision" not in svc["spec"]["selector"]
    assert svc["spec"]["selector"]["mlrollouts.io/owner"] == "ModelDeployment.iris"


def test_router_objects_are_valid_and_wired_to_the_route_table():
    cm = route_table_configmap(OWNER, {"routes.json": "{}"})
    dep = router_deployment(OWNER, image="mlrollouts/serving:1.2.3", replicas=2)
    objs = [
        cm,
        dep,
        router_service(OWNER),
        router_service_account(OWNER),
        router_role(OWNER),
        router_role_binding(OWNER),
    ]
    for obj in objs:
        validate_builtin(obj)
    c = _container(dep)
    assert c["args"][:3] == ["route", "--configmap", "ml/iris-routes"]
    assert cm["metadata"]["name"] == "iris-routes"
    assert dep["spec"]["template"]["spec"]["serviceAccountName"] == "iris-router"
    assert router_role(OWNER)["rules"][0]["resourceNames"] == ["iris-routes"]
    assert router_service(OWNER)["metadata"]["name"] == "iris"
    assert router_service(OWNER)["spec"]["selector"]["app.kubernetes.io/component"] == "router"
    assert c["securityContext"]["readOnlyRootFilesystem"] is True


def test_router_signs_ids_with_the_key_of_its_owned_secret():
    secret = signing_key_secret(OWNER, "k" * 43)
    validate_builtin(secret)
    assert secret["metadata"]["name"] == "iris-router-key"
    assert secret["metadata"]["ownerReferences"][0]["uid"] == OWNER.uid
    assert base64.b64decode(secret["data"]["signing-key"]).decode() == "k" * 43
    env = {e["name"]: e for e in _container(router_deployment(OWNER))["env"]}
    assert env["MLROUTER_SIGNING_KEY"]["valueFrom"]["secretKeyRef"] == {
        "name": "iris-router-key",
        "key": "signing-key",
    }
    assert env["MLROUTER_REQUIRE_SIGNING_KEY"]["value"] == "1"
    with pytest.raises(ValueError, match="signing key"):
        signing_key_secret(OWNER, "too-short")


def test_http_route_validates_against_gateway_api_schema():
    route = http_route(
        OWNER,
        [ParentRef("public", namespace="gateways", section_name="https")],
        {"abc123def0": 90, "fff000aaa1": 10},
        hostnames=["iris.example.com"],
    )
    validate_http_route(route)
    backends = route["spec"]["rules"][0]["backendRefs"]
    assert {(b["name"], b["weight"]) for b in backends} == {("iris-abc123def0", 90), ("iris-fff000aaa1", 10)}
    assert route["metadata"]["name"] == "iris"


def test_http_route_schema_rejects_a_negative_weight():
    route = http_route(OWNER, [ParentRef("public")], {"abc123def0": -1})
    with pytest.raises(Exception, match="-1"):
        validate_http_route(route)


def test_ingress_pair_is_valid_and_canary_annotated():
    stable = stable_ingress(OWNER, "abc123def0", host="iris.example.com")
    canary = canary_ingress(OWNER, "fff000aaa1", 25, host="iris.example.com")
    validate_builtin(stable)
    validate_builtin(canary)
    assert stable["metadata"]["name"] == "iris"
    assert canary["metadata"]["name"] == "iris-canary"
    ann = canary["metadata"]["annotations"]
    assert ann["nginx.ingress.kubernetes.io/canary"] == "true"
    assert ann["nginx.ingress.kubernetes.io/canary-weight"] == "25"
    backend = canary["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]["name"]
    assert backend == "iris-fff000aaa1"
    assert "annotations" not in stable["metadata"]


def test_revision_hash_is_stable_short_and_sensitive_to_pod_affecting_fields():
    model = {"name": "iris", "uri": "s3://m/iris/2", "format": "onnx"}
    serving = {"replicas": 2, "resources": {"requests": {"cpu": "1"}}}
    rev = revision_hash(model, serving)
    assert rev == revision_hash(dict(reversed(model.items())), serving)
    assert len(rev) == 10 and rev.isalnum() and rev == rev.lower()
    assert rev != revision_hash({**model, "uri": "s3://m/iris/3"}, serving)
    assert rev != revision_hash(model, {**serving, "resources": {"requests": {"cpu": "2"}}})
    # an optional field left unset does not create a new revision
    assert rev == revision_hash({**model, "signature": None}, {**serving, "env": {}})
