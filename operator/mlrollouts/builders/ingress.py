"""ingress-nginx entry point: stable Ingress ``<name>`` and canary Ingress ``<name>-canary``."""

from __future__ import annotations

from mlrollouts.builders.common import Object, Owner, metadata, revision_name

ENTRY_COMPONENT = "entry"
CANARY_ANNOTATION = "nginx.ingress.kubernetes.io/canary"
CANARY_WEIGHT_ANNOTATION = "nginx.ingress.kubernetes.io/canary-weight"
CANARY_TOTAL_ANNOTATION = "nginx.ingress.kubernetes.io/canary-weight-total"


def canary_ingress_name(owner: Owner) -> str:
    return f"{owner.name}-canary"


def _ingress(owner: Owner, name: str, revision: str, host: str | None, path: str, class_name: str) -> Object:
    rule: Object = {
        "http": {
            "paths": [
                {
                    "path": path,
                    "pathType": "Prefix",
                    "backend": {
                        "service": {"name": revision_name(owner.name, revision), "port": {"name": "http"}}
                    },
                }
            ]
        }
    }
    if host:
        rule["host"] = host
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": metadata(owner, name, ENTRY_COMPONENT),
        "spec": {"ingressClassName": class_name, "rules": [rule]},
    }


def stable_ingress(
    owner: Owner, revision: str, host: str | None = None, path: str = "/", class_name: str = "nginx"
) -> Object:
    return _ingress(owner, owner.name, revision, host, path, class_name)


def canary_ingress(
    owner: Owner,
    revision: str,
    weight: int,
    host: str | None = None,
    path: str = "/",
    class_name: str = "nginx",
) -> Object:
    """The canary arm; ingress-nginx sends ``weight`` percent of the stable Ingress's traffic here."""
    obj = _ingress(owner, canary_ingress_name(owner), revision, host, path, class_name)
    obj["metadata"]["annotations"] = {
        CANARY_ANNOTATION: "true",
        CANARY_WEIGHT_ANNOTATION: str(int(weight)),
        CANARY_TOTAL_ANNOTATION: "100",
    }
    return obj
