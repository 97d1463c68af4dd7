"""The chart's admission webhook: configuration, Service, certificate and the RBAC it needs."""

from __future__ import annotations

from typing import Any

import helm_python
import pytest
from chart_render import CHART_DIR, NAMESPACE, RELEASE, render, supported_versions, validate_official

from mlrollouts.controller.admission import REFERENCES, STRUCTURE

CERT_MANAGER = {"webhook": {"certificate": {"source": "certManager"}}}
SERVICE = f"{RELEASE}-mlrollouts-webhook"
CONFIGURATION = f"{RELEASE}-mlrollouts"


def webhooks(rendered: Any) -> dict[str, dict[str, Any]]:
    configuration = rendered.one("ValidatingWebhookConfiguration", CONFIGURATION)
    return {hook["name"]: hook for hook in configuration["webhooks"]}


@pytest.mark.parametrize("values", [{}, CERT_MANAGER], ids=["self-signed", "cert-manager"])
def test_structural_checks_fail_closed_and_reference_warnings_fail_open(values: dict[str, Any]) -> None:
    rendered = render(values)
    hooks = webhooks(rendered)
    assert set(hooks) == {f"{STRUCTURE}.mlrollouts.io", f"{REFERENCES}.mlrollouts.io"}
    structure, references = hooks[f"{STRUCTURE}.mlrollouts.io"], hooks[f"{REFERENCES}.mlrollouts.io"]
    assert (structure["failurePolicy"], references["failurePolicy"]) == ("Fail", "Ignore")
    assert structure["rules"][0]["resources"] == ["modeldeployments", "compositemodels"]
    assert references["rules"][0]["resources"] == ["experiments", "compositemodels"]
    for handler, hook in ((STRUCTURE, structure), (REFERENCES, references)):
        # kopf serves each handler at /<handler id>
        assert hook["clientConfig"]["service"] == {
            "namespace": NAMESPACE,
            "name": SERVICE,
            "path": f"/{handler}",
            "port": 443,
        }
        assert hook["rules"][0]["operations"] == ["CREATE", "UPDATE"]
        assert hook["sideEffects"] == "None" and hook["timeoutSeconds"] == 10
    service = rendered.one("Service", SERVICE)
    assert service["spec"]["ports"] == [
        {"name": "webhook", "port": 443, "targetPort": "webhook", "protocol": "TCP"}
    ]
    assert service["spec"]["selector"] == rendered.deployment["spec"]["selector"]["matchLabels"]
    assert {"name": "webhook", "containerPort": 9443, "protocol": "TCP"} in rendered.container["ports"]
    for version in supported_versions():
        validate_official(rendered.one("ValidatingWebhookConfiguration"), version)
        validate_official(service, version)


def settings(rendered: Any) -> dict[str, str]:
    return rendered.one("ConfigMap", f"{RELEASE}-mlrollouts-settings")["data"]


def test_without_cert_manager_the_operator_signs_and_may_write_only_its_own_configuration() -> None:
    rendered = render()
    assert rendered.of_kind("Certificate") == []
    assert "caBundle" not in webhooks(rendered)[f"{STRUCTURE}.mlrollouts.io"]["clientConfig"]
    env = settings(rendered)
    assert env["MLROLLOUTS_WEBHOOK_INJECT_CA_INTO"] == CONFIGURATION
    assert env["MLROLLOUTS_WEBHOOK_SERVICE"] == f"{NAMESPACE}/{SERVICE}:443"
    assert env["MLROLLOUTS_WEBHOOK_PORT"] == "9443"
    assert "MLROLLOUTS_WEBHOOK_CERT_DIR" not in env
    rules = [
        r for r in rendered.one("ClusterRole")["rules"] if "admissionregistration.k8s.io" in r["apiGroups"]
    ]
    assert rules == [
        {
            "apiGroups": ["admissionregistration.k8s.io"],
            "resources": ["validatingwebhookconfigurations"],
            "resourceNames": [CONFIGURATION],
            "verbs": ["get", "update"],
        }
    ]


def test_with_cert_manager_the_certificate_is_mounted_and_its_ca_injected() -> None:
    rendered = render(CERT_MANAGER)
    configuration = rendered.one("ValidatingWebhookConfiguration")
    assert configuration["metadata"]["annotations"] == {
        "cert-manager.io/inject-ca-from": f"{NAMESPACE}/{SERVICE}"
    }
    certificate = rendered.one("Certificate", SERVICE)["spec"]
    assert f"{SERVICE}.{NAMESPACE}.svc" in certificate["dnsNames"]
    assert certificate["issuerRef"] == {"name": SERVICE, "kind": "Issuer", "group": "cert-manager.io"}
    assert rendered.one("Issuer", SERVICE)["spec"] == {"selfSigned": {}}
    assert settings(rendered)["MLROLLOUTS_WEBHOOK_CERT_DIR"] == "/webhook-certs"
    volumes = rendered.deployment["spec"]["template"]["spec"]["volumes"]
    assert {"name": "webhook-certs", "secret": {"secretName": certificate["secretName"]}} in volumes
    # cert-manager renews the certificate: the operator needs no rights on webhook configurations
    for rule in rendered.one("ClusterRole")["rules"]:
        assert "admissionregistration.k8s.io" not in rule["apiGroups"]
    own = render(
        {
            "webhook": {
                "certificate": {
                    "source": "certManager",
                    "issuerRef": {"name": "corp-ca", "kind": "ClusterIssuer"},
                }
            }
        }
    )
    assert own.of_kind("Issuer") == []
    assert own.one("Certificate")["spec"]["issuerRef"] == {"name": "corp-ca", "kind": "ClusterIssuer"}


def test_namespaced_scope_checks_only_its_namespaces_and_needs_cert_manager() -> None:
    namespaced = {"watch": {"scope": "Namespaced", "namespaces": ["team-a", "team-b"]}}
    without = render(namespaced)
    assert without.of_kind("ValidatingWebhookConfiguration") == []
    assert "MLROLLOUTS_WEBHOOK_PORT" not in settings(without)
    with_cert_manager = render({**namespaced, **CERT_MANAGER})
    assert with_cert_manager.of_kind("ClusterRole") == []
    for hook in webhooks(with_cert_manager).values():
        assert hook["namespaceSelector"] == {
            "matchExpressions": [
                {"key": "kubernetes.io/metadata.name", "operator": "In", "values": ["team-a", "team-b"]}
            ]
        }
    with (
        helm_python.Chart.load(CHART_DIR) as chart,
        pytest.raises(helm_python.HelmRenderError, match=r"selfSigned needs watch\.scope=Cluster"),
    ):
        chart.render(
            {**namespaced, "webhook": {"certificate": {"source": "selfSigned"}}},
            name=RELEASE,
            namespace=NAMESPACE,
        )


def test_the_webhook_can_be_turned_off() -> None:
    rendered = render({"webhook": {"enabled": False}})
    assert rendered.of_kind("ValidatingWebhookConfiguration") == []
    assert not [s for s in rendered.of_kind("Service") if s["metadata"]["name"] == SERVICE]
    assert not [k for k in settings(rendered) if k.startswith("MLROLLOUTS_WEBHOOK_")]


def test_private_model_hosts_setting_reaches_the_operator() -> None:
    assert settings(render())["MLROLLOUTS_ALLOW_PRIVATE_MODEL_HOSTS"] == "false"
    assert (
        settings(render({"operator": {"allowPrivateModelHosts": True}}))[
            "MLROLLOUTS_ALLOW_PRIVATE_MODEL_HOSTS"
        ]
        == "true"
    )


@pytest.mark.parametrize(
    ("values", "where"),
    [
        ({"webhook": {"timeoutSeconds": 31}}, "/webhook/timeoutSeconds"),
        ({"webhook": {"certificate": {"source": "vault"}}}, "/webhook/certificate/source"),
        (
            {"webhook": {"certificate": {"issuerRef": {"kind": "ClusterIssuer"}}}},
            "/webhook/certificate/issuerRef",
        ),
        ({"webhook": {"port": 443}}, "/webhook/port"),
        ({"operator": {"allowPrivateModelHosts": "yes"}}, "/operator/allowPrivateModelHosts"),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_schema_rejects_bad_webhook_values(values: dict[str, Any], where: str) -> None:
    with helm_python.Chart.load(CHART_DIR) as chart, pytest.raises(helm_python.HelmValuesError, match=where):
        chart.render(values, name=RELEASE, namespace=NAMESPACE)
