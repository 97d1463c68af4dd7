"""The operator's validating admission webhook: what the CRDs' OpenAPI and CEL rules cannot express.

Two webhooks, so that only the checks that must hold are enforced when the operator is down:

- ``structure`` (``failurePolicy: Fail``, kept in the configuration while the operator restarts):
  graph cycles and self-references of a CompositeModel, and the model URI policy of a
  ModelDeployment (no loopback, link-local or cloud metadata hosts unless the operator allows them).
  The operator refuses the same specs when it reconciles one stored while the webhook was down.
- ``references`` (``failurePolicy: Ignore``): components and variants that name a ModelDeployment
  or Experiment that does not exist yet. Creation order is free in GitOps, so this is a warning
  (``kubectl`` prints it), never a refusal.

The server is kopf's (``settings.admission.server``). Its certificate is either mounted (cert-manager
renews the files; kopf re-reads them and restarts the listener) or generated here: a self-signed
certificate renewed every ``SELF_SIGNED_RENEW_AFTER`` by rewriting the files, which kopf notices the
same way; with ``MLROLLOUTS_WEBHOOK_CONFIGURATION`` set, kopf then writes the new CA bundle into the
ValidatingWebhookConfiguration of that name (``settings.admission.managed``).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime
import ipaddress
import logging
import os
import tempfile
from collections.abc import AsyncIterator, Collection, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kopf
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from pydantic import ValidationError

from mlrollouts.api import format_validation_error
from mlrollouts.api.kinds import COMPOSITE_MODEL, EXPERIMENT, KINDS, MODEL_DEPLOYMENT
from mlrollouts.composite.admission import component_references, graph_problems
from mlrollouts.controller.config import OperatorConfig
from mlrollouts.controller.kube import Kube, KubeError
from mlrollouts.core.names import CATEGORY, GROUP, VERSION

log = logging.getLogger("mlrollouts.controller.admission")

STRUCTURE = "structure"
"""Handler id and URL path of the webhook that refuses what cannot run (``failurePolicy: Fail``)."""
REFERENCES = "references"
"""Handler id and URL path of the webhook that warns of missing references (``failurePolicy: Ignore``)."""

SELF_SIGNED_VALIDITY = datetime.timedelta(days=90)
SELF_SIGNED_RENEW_AFTER = datetime.timedelta(days=60)
DENIED_CODE = 400

Obj = dict[str, Any]


@dataclass(frozen=True)
class WebhookSettings:
    """Where and how the webhook listens (``MLROLLOUTS_WEBHOOK_*``; no port: no webhook)."""

    port: int | None = None
    addr: str = "0.0.0.0"
    host: str | None = None
    """Host of the webhook URL the configuration names when it names no Service."""
    cert_dir: str | None = None
    """Directory with ``tls.crt`` and ``tls.key`` (a cert-manager Secret); none: self-signed."""
    configuration: str | None = None
    """Name of the ValidatingWebhookConfiguration the operator keeps up to date; none: not managed."""
    service: str | None = None
    """``namespace/name:port`` of the Service in front of the webhook, as the configuration names it."""
    inject_ca_into: str | None = None
    """Name of a ValidatingWebhookConfiguration (installed by the chart) whose webhooks that name
    ``service`` get the self-signed certificate as their ``caBundle``."""

    @classmethod
    def from_environment(cls, env: Mapping[str, str] | None = None) -> WebhookSettings:
        env = os.environ if env is None else env
        port = env.get("MLROLLOUTS_WEBHOOK_PORT", "").strip()
        if port and not port.isdigit():
            raise ValueError(f"MLROLLOUTS_WEBHOOK_PORT: {port!r} is not a port number")
        return cls(
            port=int(port) if port else None,
            addr=env.get("MLROLLOUTS_WEBHOOK_ADDR") or "0.0.0.0",
            host=env.get("MLROLLOUTS_WEBHOOK_HOST") or None,
            cert_dir=env.get("MLROLLOUTS_WEBHOOK_CERT_DIR") or None,
            configuration=env.get("MLROLLOUTS_WEBHOOK_CONFIGURATION") or None,
            service=env.get("MLROLLOUTS_WEBHOOK_SERVICE") or None,
            inject_ca_into=env.get("MLROLLOUTS_WEBHOOK_INJECT_CA_INTO") or None,
        )

    @property
    def enabled(self) -> bool:
        return self.port is not None


# ------------------------------------------------------------------------------------------ checks


def structural_problems(kind: str, name: str, namespace: str, spec: Obj, config: OperatorConfig) -> list[str]:
    """What the operator would refuse in this spec, one line per problem naming its field."""
    model_problem = api_model_problem(kind, name, namespace, spec)
    if model_problem is not None:
        return [model_problem]
    if kind == COMPOSITE_MODEL.kind:
        return graph_problems(name, namespace, spec)
    if kind == MODEL_DEPLOYMENT.kind:
        uri = (spec.get("model") or {}).get("uri")
        refused = config.model_uri_refusal(uri, "spec.model.uri") if isinstance(uri, str) else None
        return [refused] if refused else []
    return []


def api_model_problem(kind: str, name: str, namespace: str, spec: Obj) -> str | None:
    """The refusal of the kind's API model (the rules the CRD schema cannot express, such as a hook
    naming a step that does not exist), or None when the model accepts the spec."""
    resource_kind = next((k for k in KINDS if k.kind == kind), None)
    if resource_kind is None:
        return None
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": kind,
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }
    try:
        resource_kind.model.model_validate(body)
    except ValidationError as exc:
        return format_validation_error(exc)
    return None


def references(kind: str, spec: Obj) -> list[tuple[str, str, str]]:
    """``(field, kind, name)`` of every resource the spec names in its own namespace."""
    if kind == COMPOSITE_MODEL.kind:
        return [(ref.location, ref.component.kind, ref.component.name) for ref in component_references(spec)]
    if kind == EXPERIMENT.kind:
        variants = spec.get("variants") or []
        return [
            (f"spec.variants[{i}].modelDeployment", MODEL_DEPLOYMENT.kind, v["modelDeployment"])
            for i, v in enumerate(variants)
            if isinstance(v, dict) and isinstance(v.get("modelDeployment"), str)
        ]
    return []


def missing_reference_warning(field: str, kind: str, name: str, namespace: str) -> str:
    return (
        f"{field}: {kind} {name!r} does not exist in namespace {namespace!r}; "
        f"this resource waits for it (create it, or fix the name)"
    )


# ---------------------------------------------------------------------------------------- handlers


def _spec_unchanged(body: kopf.Body, details: Mapping[str, Any]) -> bool:
    old = details.get("old")
    return details.get("operation") == "UPDATE" and old is not None and old.get("spec") == body.get("spec")


async def validate_structure(*, body: kopf.Body, memo: Any, **details: Any) -> None:
    if _spec_unchanged(body, details):
        # metadata-only writes (finalizers, annotations, deletion) must pass for a spec that was
        # stored while the webhook was down: the operator reports it as Degraded instead
        return
    meta = body.metadata
    problems = structural_problems(
        body.get("kind", ""), meta.name or "", meta.namespace or "", dict(body.spec), memo.config
    )
    if problems:
        raise kopf.AdmissionError("; ".join(problems), code=DENIED_CODE)


async def warn_missing_references(*, body: kopf.Body, memo: Any, warnings: list[str], **details: Any) -> None:
    if _spec_unchanged(body, details):
        return  # the operator's own metadata writes: nothing the author could act on
    namespace = body.metadata.namespace or "default"
    for field, kind, name in references(body.get("kind", ""), dict(body.spec)):
        if await memo.kube.get(f"{GROUP}/{VERSION}", kind, namespace, name) is None:
            warnings.append(missing_reference_warning(field, kind, name, namespace))


def register(registry: kopf.OperatorRegistry, webhook: WebhookSettings) -> None:
    """The webhook handlers, when the operator serves a webhook (kopf refuses handlers without a server)."""
    if not webhook.enabled:
        return
    for handler, name, ignore_failures in (
        (validate_structure, STRUCTURE, False),
        (warn_missing_references, REFERENCES, True),
    ):
        kopf.on.validate(
            group=GROUP,
            version=VERSION,
            category=CATEGORY,
            id=name,
            operations=["CREATE", "UPDATE"],
            persistent=not ignore_failures,  # the Fail webhook stays registered while the operator restarts
            ignore_failures=ignore_failures,
            registry=registry,
        )(handler)


def configure(settings: kopf.OperatorSettings, webhook: WebhookSettings) -> None:
    """kopf's admission settings: the server, and the configuration it manages (if any)."""
    if not webhook.enabled:
        return
    settings.admission.server = OperatorWebhookServer(webhook)
    settings.admission.managed = webhook.configuration


# ------------------------------------------------------------------------------------------ server


def parse_service(text: str) -> tuple[str, str, int]:
    """``namespace/name:port`` -> its parts; raises ValueError naming MLROLLOUTS_WEBHOOK_SERVICE."""
    namespace, _, rest = text.partition("/")
    name, _, port = rest.partition(":")
    if not namespace or not name or not port.isdigit():
        raise ValueError(f"MLROLLOUTS_WEBHOOK_SERVICE: {text!r} is not namespace/name:port")
    return namespace, name, int(port)


def service_hostnames(namespace: str, name: str) -> list[str]:
    return [f"{name}.{namespace}.svc", f"{name}.{namespace}.svc.cluster.local", f"{name}.{namespace}", name]


class OperatorWebhookServer(kopf.WebhookServer):
    """kopf's HTTPS server with a certificate from files (renewed outside) or self-signed here
    (renewed here), announcing itself by Service when it has one."""

    def __init__(self, webhook: WebhookSettings) -> None:
        self.webhook = webhook
        self.service = parse_service(webhook.service) if webhook.service else None
        sans = service_hostnames(*self.service[:2]) if self.service else []
        cert_dir = Path(webhook.cert_dir) if webhook.cert_dir else None
        super().__init__(
            addr=webhook.addr,
            port=webhook.port,
            host=webhook.host,
            extra_sans=sans,
            certfile=cert_dir / "tls.crt" if cert_dir else None,
            pkeyfile=cert_dir / "tls.key" if cert_dir else None,
            file_check_interval=10.0,
        )

    def hostnames(self) -> list[str]:
        addr = self._get_accessible_addr(self.addr)
        return list(dict.fromkeys([self.host or addr, addr, "localhost", *self.extra_sans]))

    async def __call__(self, fn: Any) -> AsyncIterator[Any]:
        renewal = None
        with contextlib.ExitStack() as stack:
            if self.certfile is None:
                directory = Path(
                    stack.enter_context(tempfile.TemporaryDirectory(prefix="mlrollouts-webhook-"))
                )
                self.certfile, self.pkeyfile = directory / "tls.crt", directory / "tls.key"
                write_self_signed(self.certfile, self.pkeyfile, self.hostnames())
                renewal = asyncio.create_task(self._renew_self_signed())
            injection: asyncio.Task[None] | None = None
            try:
                async for config in super().__call__(fn):
                    if self.webhook.inject_ca_into and self.service and "caBundle" in config:
                        if injection is not None:
                            injection.cancel()
                        injection = asyncio.create_task(self._inject_ca(str(config["caBundle"])))
                    yield self._by_service(config)
            finally:
                for task in (renewal, injection):
                    if task is not None:
                        task.cancel()

    async def _inject_ca(self, bundle: str) -> None:
        """Write the CA bundle into the chart's configuration until it sticks (the API server
        cannot call the webhook before it does)."""
        assert self.webhook.inject_ca_into is not None and self.service is not None
        async with Kube.from_environment() as kube:
            while True:
                try:
                    await inject_ca_bundle(kube, self.webhook.inject_ca_into, self.service[:2], bundle)
                    return
                except KubeError as exc:
                    log.error(
                        "cannot write the webhook CA bundle into %s: %s", self.webhook.inject_ca_into, exc
                    )
                await asyncio.sleep(10)

    async def _renew_self_signed(self) -> None:
        while True:
            await asyncio.sleep(SELF_SIGNED_RENEW_AFTER.total_seconds())
            assert self.certfile is not None and self.pkeyfile is not None
            write_self_signed(Path(self.certfile), Path(self.pkeyfile), self.hostnames())
            log.info("renewed the webhook's self-signed certificate")

    def _by_service(self, config: Any) -> Any:
        if self.service is None:
            return config
        namespace, name, port = self.service
        announced = {"service": {"namespace": namespace, "name": name, "port": port}}
        if "caBundle" in config:
            announced["caBundle"] = config["caBundle"]
        return announced


def self_signed_certificate(
    hostnames: Iterable[str], now: datetime.datetime, validity: datetime.timedelta = SELF_SIGNED_VALIDITY
) -> tuple[bytes, bytes]:
    """A self-signed certificate (its own CA: the configuration's caBundle) and its key, in PEM."""
    key = ec.generate_private_key(ec.SECP256R1())
    names = list(dict.fromkeys(hostnames))
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, _common_name(names))])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + validity)
        .add_extension(x509.SubjectAlternativeName(_general_names(names)), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    pem_key = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return cert.public_bytes(serialization.Encoding.PEM), pem_key


def write_self_signed(certfile: Path, keyfile: Path, hostnames: Collection[str]) -> None:
    cert, key = self_signed_certificate(hostnames, datetime.datetime.now(datetime.UTC))
    keyfile.touch(mode=0o600)
    keyfile.write_bytes(key)
    certfile.write_bytes(cert)


def _common_name(names: list[str]) -> str:
    dns = [n for n in names if _ip(n) is None]
    return (dns or names or ["mlrollouts-webhook"])[0][:64]


def _general_names(names: list[str]) -> list[x509.GeneralName]:
    general: list[x509.GeneralName] = []
    for name in names:
        address = _ip(name)
        if address is not None:
            if not address.is_unspecified:
                general.append(x509.IPAddress(address))
        else:
            general.append(x509.DNSName(name))
    return general


def _ip(name: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(name.strip("[]"))
    except ValueError:
        return None


# ------------------------------------------------------------------------------------ CA injection

WEBHOOK_CONFIGURATION = ("admissionregistration.k8s.io/v1", "ValidatingWebhookConfiguration")


MAX_TRUSTED_CERTIFICATES = 4
"""Certificates a merged CA bundle keeps: one per replica (each generates its own) plus the ones
being replaced, so a renewal or a second replica never locks the API server out."""


def merged_ca_bundle(existing: str | None, ours: str, now: datetime.datetime) -> str:
    """``existing`` (base64 PEM) with ``ours`` added, expired and surplus oldest certificates dropped."""
    mine = x509.load_pem_x509_certificates(base64.b64decode(ours))
    try:
        theirs = x509.load_pem_x509_certificates(base64.b64decode(existing)) if existing else []
    except ValueError:
        theirs = []  # not a bundle we can read: ours replaces it
    kept = [c for c in theirs if c.not_valid_after_utc > now and c not in mine]
    kept.sort(key=lambda c: c.not_valid_before_utc)
    keep = kept[max(0, len(kept) + len(mine) - MAX_TRUSTED_CERTIFICATES) :] + mine
    pem = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in keep)
    return base64.b64encode(pem).decode("ascii")


def with_ca_bundle(
    configuration: Obj, service: tuple[str, str], bundle: str, now: datetime.datetime
) -> Obj | None:
    """The configuration with ``bundle`` trusted by every webhook that calls ``service``
    (namespace, name); ``None`` when they all trust it already."""
    webhooks = []
    changed = False
    for webhook in configuration.get("webhooks") or []:
        client = dict(webhook.get("clientConfig") or {})
        target = client.get("service") or {}
        if (target.get("namespace"), target.get("name")) == service:
            merged = merged_ca_bundle(client.get("caBundle"), bundle, now)
            if merged != client.get("caBundle"):
                client["caBundle"] = merged
                webhook = {**webhook, "clientConfig": client}
                changed = True
        webhooks.append(webhook)
    return {**configuration, "webhooks": webhooks} if changed else None


async def inject_ca_bundle(kube: Kube, name: str, service: tuple[str, str], bundle: str) -> None:
    """Replace the configuration with the new bundle (optimistic: a conflicting write is re-read)."""
    for _ in range(5):
        current = await kube.get(*WEBHOOK_CONFIGURATION, None, name)
        if current is None:
            raise KubeError(404, f"ValidatingWebhookConfiguration {name!r} not found (the chart installs it)")
        updated = with_ca_bundle(current, service, bundle, datetime.datetime.now(datetime.UTC))
        if updated is None:
            return
        try:
            await kube.replace(updated)
            log.info("wrote the webhook CA bundle into ValidatingWebhookConfiguration %s", name)
            return
        except KubeError as exc:
            if exc.status != 409:
                raise
    raise KubeError(409, f"ValidatingWebhookConfiguration {name!r} kept changing")
