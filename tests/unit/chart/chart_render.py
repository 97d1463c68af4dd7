"""Render the Helm chart with the real Helm engine (helm-python-sdk) and validate what comes out."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import helm_python
import kubernetes_validate
import yaml
from kubernetes_validate.utils import all_versions
from packaging.version import Version

REPO_ROOT = Path(__file__).resolve().parents[3]
CHART_DIR = REPO_ROOT / "charts" / "mlrollouts"
RELEASE = "mlr"
NAMESPACE = "mlrollouts-system"

# Kinds defined by CRDs (Prometheus Operator, kopf): not in the official schemas, checked structurally.
CRD_KINDS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
    ("monitoring.coreos.com/v1", "PodMonitor"),
    ("kopf.dev/v1", "KopfPeering"),
    ("kopf.dev/v1", "ClusterKopfPeering"),
}

# The value sets every test renders: defaults and the three deployment shapes users pick.
VALUE_SETS: dict[str, dict[str, Any]] = {
    "default": {},
    "namespaced": {"watch": {"scope": "Namespaced", "namespaces": ["team-a", "team-b"]}},
    "ha": {"replicaCount": 2},
    "monitoring": {
        "monitoring": {
            "serviceMonitor": {"enabled": True, "labels": {"release": "kube-prometheus-stack"}},
            "podMonitor": {"enabled": True},
            "dashboard": {"enabled": True, "namespace": "grafana"},
        }
    },
    "namespaced-ha-monitoring": {
        "replicaCount": 2,
        "watch": {"scope": "Namespaced"},
        "monitoring": {"serviceMonitor": {"enabled": True}, "podMonitor": {"enabled": True}},
        "image": {"digest": "sha256:" + "0" * 64},
    },
}


class _StrictLoader(yaml.SafeLoader):
    """A YAML loader that refuses duplicate keys (PyYAML keeps the last one silently)."""


def _mapping_without_duplicates(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        if key in seen:
            raise AssertionError(f"duplicate key {key!r} at {key_node.start_mark}")
        seen.add(key)
    return loader.construct_mapping(node)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_without_duplicates)


def load_all(text: str) -> list[Any]:
    return [doc for doc in yaml.load_all(text, Loader=_StrictLoader) if doc]


def supported_versions() -> tuple[str, str]:
    """The oldest Kubernetes version the chart declares (Chart.yaml kubeVersion) and the newest schema."""
    constraint = yaml.safe_load((CHART_DIR / "Chart.yaml").read_text())["kubeVersion"]
    oldest = constraint.removeprefix(">=").split("-")[0].strip()
    newest = all_versions()[-1]
    assert Version(oldest) < Version(newest)
    return oldest, newest


class Rendered:
    """The objects of one rendering, with the raw manifests by template path."""

    def __init__(self, manifests: dict[str, str]) -> None:
        self.manifests = manifests
        self.notes = manifests.get("mlrollouts/templates/NOTES.txt", "")
        self.objects: list[dict[str, Any]] = []
        for path, text in sorted(manifests.items()):
            if path.endswith("NOTES.txt"):
                continue
            self.objects.extend(load_all(text))

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [o for o in self.objects if o["kind"] == kind]

    def one(self, kind: str, name: str | None = None) -> dict[str, Any]:
        found = [o for o in self.of_kind(kind) if name is None or o["metadata"]["name"] == name]
        assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
        return found[0]

    @property
    def deployment(self) -> dict[str, Any]:
        return self.one("Deployment")

    @property
    def container(self) -> dict[str, Any]:
        return self.deployment["spec"]["template"]["spec"]["containers"][0]


def render(values: dict[str, Any] | None = None, namespace: str = NAMESPACE) -> Rendered:
    with helm_python.Chart.load(CHART_DIR) as chart:
        return Rendered(chart.render(values or {}, name=RELEASE, namespace=namespace, is_install=True))


CRD_FILES = CHART_DIR / "files" / "crds"
"""The generated mlrollouts CRDs the chart renders (templates/crds.yaml); ``make crds`` writes them."""


@functools.cache
def chart_crds() -> list[dict[str, Any]]:
    """The CRDs a default install creates: the mlrollouts ones rendered from templates/crds.yaml, and
    those Helm installs from the ``crds/`` directories (the kopf-peering subchart's)."""
    with helm_python.Chart.load(CHART_DIR) as chart:
        docs: list[dict[str, Any]] = []
        for crd in chart.crds:
            docs.extend(load_all(crd["data"]))
    docs.extend(render().of_kind("CustomResourceDefinition"))
    return docs


def validate_official(obj: dict[str, Any], version: str) -> None:
    """Strict validation against the official schema of that Kubernetes version."""
    try:
        kubernetes_validate.validate(obj, version, strict=True)
    except kubernetes_validate.ValidationError as exc:
        path = "/".join(str(p) for p in exc.absolute_path)
        raise AssertionError(
            f"Kubernetes {version}: {obj['kind']} {obj['metadata'].get('name')}: {path}: {exc.message}"
        ) from None
