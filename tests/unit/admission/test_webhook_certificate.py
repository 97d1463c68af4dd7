"""The webhook's self-signed certificate and how the server announces itself."""

from __future__ import annotations

import base64
import datetime
import ipaddress
import ssl

from cryptography import x509

from mlrollouts.controller.admission import (
    MAX_TRUSTED_CERTIFICATES,
    OperatorWebhookServer,
    WebhookSettings,
    merged_ca_bundle,
    self_signed_certificate,
    service_hostnames,
    with_ca_bundle,
)

NOW = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)


def test_the_certificate_names_every_host_and_is_its_own_ca():
    names = ["127.0.0.1", "0.0.0.0", *service_hostnames("ops", "mlrollouts-webhook")]
    pem, key = self_signed_certificate(names, NOW)
    cert = x509.load_pem_x509_certificate(pem)
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    assert sans.get_values_for_type(x509.DNSName) == [
        "mlrollouts-webhook.ops.svc",
        "mlrollouts-webhook.ops.svc.cluster.local",
        "mlrollouts-webhook.ops",
        "mlrollouts-webhook",
    ]
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert cert.not_valid_after_utc - NOW == datetime.timedelta(days=90)
    assert b"PRIVATE KEY" in key
    ssl.create_default_context(cadata=pem.decode())  # usable as the caBundle a client trusts


def test_behind_a_service_the_configuration_names_the_service():
    server = OperatorWebhookServer(WebhookSettings(port=9443, service="ops/mlrollouts-webhook:443"))
    assert "mlrollouts-webhook.ops.svc" in server.hostnames()
    announced = server._by_service({"url": "https://10.0.0.7:9443", "caBundle": "Q0E="})
    assert announced == {
        "service": {"namespace": "ops", "name": "mlrollouts-webhook", "port": 443},
        "caBundle": "Q0E=",
    }
    plain = OperatorWebhookServer(WebhookSettings(port=9443, addr="127.0.0.1"))
    assert plain._by_service({"url": "https://127.0.0.1:9443"}) == {"url": "https://127.0.0.1:9443"}


def bundle(*pems: bytes) -> str:
    return base64.b64encode(b"".join(pems)).decode()


def subjects(encoded: str) -> list[str]:
    return [
        c.not_valid_before_utc.isoformat() for c in x509.load_pem_x509_certificates(base64.b64decode(encoded))
    ]


def test_the_ca_bundle_keeps_other_replicas_certificates_and_drops_expired_ones():
    day = datetime.timedelta(days=1)
    old, _ = self_signed_certificate(["a"], NOW - 100 * day)  # expired 10 days ago
    other, _ = self_signed_certificate(["b"], NOW - day)
    ours, _ = self_signed_certificate(["c"], NOW)
    merged = merged_ca_bundle(bundle(old, other), bundle(ours), NOW)
    assert subjects(merged) == subjects(bundle(other, ours))
    assert merged_ca_bundle(merged, bundle(ours), NOW) == merged  # idempotent
    assert subjects(merged_ca_bundle("not base64 pem", bundle(ours), NOW)) == subjects(bundle(ours))
    many = [self_signed_certificate(["x"], NOW - i * day)[0] for i in range(6, 0, -1)]
    assert len(subjects(merged_ca_bundle(bundle(*many), bundle(ours), NOW))) == MAX_TRUSTED_CERTIFICATES


def test_only_the_webhooks_of_our_service_get_the_bundle():
    ours, _ = self_signed_certificate(["c"], NOW)
    configuration = {
        "metadata": {"name": "mlr-mlrollouts", "resourceVersion": "7"},
        "webhooks": [
            {
                "name": "structure.mlrollouts.io",
                "clientConfig": {"service": {"namespace": "ops", "name": "wh"}},
            },
            {"name": "other.example.com", "clientConfig": {"service": {"namespace": "ops", "name": "else"}}},
        ],
    }
    updated = with_ca_bundle(configuration, ("ops", "wh"), bundle(ours), NOW)
    assert updated is not None and updated["metadata"]["resourceVersion"] == "7"
    assert updated["webhooks"][0]["clientConfig"]["caBundle"] == bundle(ours)
    assert "caBundle" not in updated["webhooks"][1]["clientConfig"]
    assert with_ca_bundle(updated, ("ops", "wh"), bundle(ours), NOW) is None
