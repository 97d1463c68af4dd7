"""The operator's admission webhook, called by the API emulator as a real API server calls it.

The operator (kopf) serves the webhook over HTTPS with a self-signed certificate and registers the
ValidatingWebhookConfiguration itself; kubectl, pointed at the emulator, sees what a user sees.
"""

from __future__ import annotations

import base64
import subprocess
import textwrap
from pathlib import Path

import pytest
from cryptography import x509
from harness import Cluster, start_operator

from support import free_port, require_binary, wait_until

pytestmark = pytest.mark.integration

CONFIGURATION = "mlrollouts-webhook-test"
VWC_PATH = f"/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations/{CONFIGURATION}"

CYCLE = """
apiVersion: mlrollouts.io/v1alpha1
kind: CompositeModel
metadata: {name: loop}
spec:
  root: a
  nodes:
  - {name: a, type: Sequence, children: [b]}
  - {name: b, type: Sequence, children: [a]}
"""
MISSING_COMPONENT = """
apiVersion: mlrollouts.io/v1alpha1
kind: CompositeModel
metadata: {name: scores}
spec:
  root: main
  nodes:
  - {name: main, type: Sequence, children: [risk]}
  - {name: risk, type: Model, modelDeployment: risk-model-not-yet-there}
"""


def model_deployment(name: str, uri: str) -> str:
    return textwrap.dedent(
        f"""
        apiVersion: mlrollouts.io/v1alpha1
        kind: ModelDeployment
        metadata: {{name: {name}}}
        spec:
          model: {{uri: "{uri}", format: sklearn}}
        """
    )


@pytest.fixture
def kubectl(cluster: Cluster, tmp_path: Path):
    binary = require_binary("kubectl")

    def apply(namespace: str, manifest: str, *flags: str) -> subprocess.CompletedProcess[str]:
        argv = [binary, f"--kubeconfig={cluster.kubeconfig}", f"--cache-dir={tmp_path / 'kube-cache'}"]
        argv += ["--request-timeout=20s", "-n", namespace, "apply", *flags, "-f", "-"]
        return subprocess.run(argv, input=manifest, capture_output=True, text=True, timeout=60)

    return apply


def webhooks_registered(cluster: Cluster) -> list[str]:
    response = cluster.http.get(VWC_PATH)
    if response.status_code != 200:
        return []
    hooks = response.json().get("webhooks") or []
    return sorted(h["name"] for h in hooks if h.get("clientConfig", {}).get("caBundle"))


def test_webhook_refuses_cycles_and_private_model_hosts_and_warns_of_missing_references(
    cluster: Cluster, namespace: str, kubectl, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    # stored before any webhook exists: only the operator's reconcile can refuse it
    stored = kubectl(namespace, model_deployment("early", "http://169.254.169.254/latest/model.skops"))
    assert stored.returncode == 0, stored.stderr
    monkeypatch.setenv("MLROLLOUTS_WEBHOOK_PORT", str(free_port()))
    monkeypatch.setenv("MLROLLOUTS_WEBHOOK_ADDR", "127.0.0.1")
    monkeypatch.setenv("MLROLLOUTS_WEBHOOK_CONFIGURATION", CONFIGURATION)
    operator, _ = start_operator(cluster, tmp_path, prometheus_url=None)
    try:
        names = wait_until(lambda: webhooks_registered(cluster), timeout=30, message="webhooks registered")
        assert names == [f"references.{CONFIGURATION}", f"structure.{CONFIGURATION}"]

        for flags in ((), ("--server-side",)):
            refused = kubectl(namespace, CYCLE, *flags)
            assert refused.returncode != 0, flags
            assert (
                f'admission webhook "structure.{CONFIGURATION}" denied the request: '
                "spec.nodes: the graph has a cycle: a -> b -> a" in refused.stderr
            ), flags

        ssrf = kubectl(namespace, model_deployment("meta", "http://metadata.google.internal/m.skops"))
        assert ssrf.returncode != 0
        assert "spec.model.uri: host 'metadata.google.internal'" in ssrf.stderr
        assert "cloud instance metadata service" in ssrf.stderr

        warned = kubectl(namespace, MISSING_COMPONENT)
        assert warned.returncode == 0, warned.stderr
        assert (
            "Warning: spec.nodes[1].modelDeployment: ModelDeployment 'risk-model-not-yet-there' "
            f"does not exist in namespace '{namespace}'" in warned.stderr
        )

        def degraded() -> dict | None:
            status = cluster.get(namespace, "early").get("status") or {}
            return status if status.get("phase") == "Degraded" else None

        status = wait_until(degraded, timeout=30, message="the stored ModelDeployment Degraded")
        condition = next(c for c in status["conditions"] if c["type"] == "Degraded")
        assert condition["reason"] == "ModelURINotAllowed"
        assert condition["message"].startswith("spec.model.uri: host '169.254.169.254'")
    finally:
        operator.stop()

    # the structural webhook stays registered (failurePolicy Fail): with the operator down,
    # writes are refused with the reason rather than admitted unchecked
    assert webhooks_registered(cluster) == [f"structure.{CONFIGURATION}"]
    down = kubectl(namespace, model_deployment("later", "file:///models/m.skops"))
    assert down.returncode != 0
    assert f'failed calling webhook "structure.{CONFIGURATION}"' in down.stderr
    assert "connect" in down.stderr.lower()


def test_the_operator_writes_its_self_signed_ca_into_the_charts_configuration(
    cluster: Cluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    service = {"namespace": "mlrollouts-system", "name": "mlr-mlrollouts-webhook", "port": 443}
    configuration = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": "mlr-mlrollouts"},
        "webhooks": [
            {
                "name": f"{hook}.mlrollouts.io",
                "clientConfig": {"service": {**service, "path": f"/{hook}"}},
                "rules": [
                    {
                        "apiGroups": ["mlrollouts.io"],
                        "apiVersions": ["v1alpha1"],
                        "resources": ["compositemodels"],
                        "operations": ["CREATE"],
                    }
                ],
                "failurePolicy": "Ignore",
                "sideEffects": "None",
                "admissionReviewVersions": ["v1"],
            }
            for hook in ("structure", "references")
        ],
    }
    cluster.request(
        "POST", "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations", configuration
    )
    monkeypatch.setenv("MLROLLOUTS_WEBHOOK_PORT", str(free_port()))
    monkeypatch.setenv("MLROLLOUTS_WEBHOOK_SERVICE", "mlrollouts-system/mlr-mlrollouts-webhook:443")
    monkeypatch.setenv("MLROLLOUTS_WEBHOOK_INJECT_CA_INTO", "mlr-mlrollouts")
    operator, _ = start_operator(cluster, tmp_path, prometheus_url=None)
    try:

        def bundles() -> list[str] | None:
            stored = cluster.request(
                "GET", "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations/mlr-mlrollouts"
            )
            found = [h["clientConfig"].get("caBundle") for h in stored["webhooks"]]
            return found if all(found) else None

        first, second = wait_until(
            bundles, timeout=30, message=f"the CA bundle written\n{operator.output()[-2000:]}"
        )
    finally:
        operator.stop()
    assert first == second
    certificate = x509.load_pem_x509_certificates(base64.b64decode(first))[-1]
    names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "mlr-mlrollouts-webhook.mlrollouts-system.svc" in names.get_values_for_type(x509.DNSName)
