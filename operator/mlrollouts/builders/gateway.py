"""Gateway API HTTPRoute ``<name>`` with one weighted backendRef per revision Service."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from mlrollouts.builders.common import Object, Owner, metadata, revision_name

ENTRY_COMPONENT = "entry"


@dataclass(frozen=True)
class ParentRef:
    name: str
    namespace: str | None = None
    section_name: str | None = None

    def to_dict(self) -> Object:
        ref: Object = {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": self.name}
        if self.namespace:
            ref["namespace"] = self.namespace
        if self.section_name:
            ref["sectionName"] = self.section_name
        return ref


def http_route(
    owner: Owner,
    parents: Sequence[ParentRef],
    weights: Mapping[str, int],
    hostnames: Sequence[str] = (),
    path_prefix: str = "/",
) -> Object:
    """``weights`` maps revision -> weight; revisions with weight 0 stay listed so the route is stable."""
    backends = [
        {"group": "", "kind": "Service", "name": revision_name(owner.name, rev), "port": 80, "weight": int(w)}
        for rev, w in sorted(weights.items())
    ]
    spec: Object = {
        "parentRefs": [p.to_dict() for p in parents],
        "rules": [
            {
                "matches": [{"path": {"type": "PathPrefix", "value": path_prefix}}],
                "backendRefs": backends,
            }
        ],
    }
    if hostnames:
        spec["hostnames"] = list(hostnames)
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": metadata(owner, owner.name, ENTRY_COMPONENT),
        "spec": spec,
    }
