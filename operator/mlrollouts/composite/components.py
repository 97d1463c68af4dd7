"""The components of a graph: which ModelDeployment or Experiment each Model node calls, and what
its status says about it (pure: the objects come in as read from the API server).

A node is ready when its component is. A ModelDeployment is ready when it has a stable revision and
is not Degraded; one whose candidate was rolled back serves its stable revision again and counts
as ready (the rollback shows in the node's message). A ModelDeployment in a canary stays ready: the
graph calls its entry point, so the canary's own split applies inside the graph. An Experiment is
ready once its router serves (Running, Concluded or Stopped).

The entry point of both kinds is the Service ``<name>`` (the router of a ModelDeployment with the
Router provider, its Service over every revision with the Service provider, the router of an
Experiment); the GatewayAPI and IngressNginx providers have none inside the cluster.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mlrollouts.api.compositemodel import CompositeModelSpec
from mlrollouts.api.kinds import EXPERIMENT, MODEL_DEPLOYMENT, ResourceKind

Obj = dict[str, Any]

READY = "ComponentReady"
PROGRESSING = "ComponentProgressing"
ROLLED_BACK = "ComponentRolledBack"
NOT_READY = "ComponentNotReady"
MISSING = "ComponentMissing"
UNREACHABLE = "ComponentUnreachable"
PROBLEMS = frozenset({MISSING, UNREACHABLE})
"""Reasons that make the composite Degraded: the spec points at something it cannot call."""

CALLABLE_MODEL_DEPLOYMENT_PROVIDERS = ("Router", "Service")
"""Traffic providers whose entry point is a Service inside the cluster."""

_KINDS = {"modelDeployment": MODEL_DEPLOYMENT, "experiment": EXPERIMENT}


@dataclass(frozen=True, order=True)
class ComponentRef:
    """A component as a node names it: kind and name (in the composite's namespace)."""

    kind: str
    name: str

    @property
    def resource_kind(self) -> ResourceKind:
        return MODEL_DEPLOYMENT if self.kind == MODEL_DEPLOYMENT.kind else EXPERIMENT

    @property
    def service(self) -> str:
        """The Service of the component's entry point."""
        return self.name

    def __str__(self) -> str:
        return f"{self.kind}/{self.name}"


@dataclass(frozen=True)
class NodeRef:
    """A Model node and the field of the spec that names its component."""

    node: str
    index: int
    field: str
    component: ComponentRef

    @property
    def location(self) -> str:
        return f"spec.nodes[{self.index}].{self.field}"


def node_refs(spec: CompositeModelSpec) -> dict[str, NodeRef]:
    """Every Model node's component, by node name."""
    refs = {}
    for index, node in enumerate(spec.nodes):
        field, name = node.component_field, node.component
        if field is not None and name is not None:
            refs[node.name] = NodeRef(node.name, index, field, ComponentRef(_KINDS[field].kind, name))
    return refs


@dataclass(frozen=True)
class Component:
    """What a component's object says: whether a graph can call it now, and why (not)."""

    ref: ComponentRef
    ready: bool
    reason: str
    message: str
    model: str
    """The model name its entry point serves (``/v2/models/<model>/infer``)."""

    @property
    def problem(self) -> bool:
        return self.reason in PROBLEMS


def read_component(ref: ComponentRef, obj: Obj | None) -> Component:
    """The component ``ref`` as its object (``None``: not found) describes it."""
    if obj is None:
        return Component(ref, False, MISSING, f"{ref.kind} {ref.name!r} not found", ref.name)
    if ref.kind == MODEL_DEPLOYMENT.kind:
        return _model_deployment(ref, obj)
    return _experiment(ref, obj)


def _model_deployment(ref: ComponentRef, obj: Obj) -> Component:
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    model = (spec.get("model") or {}).get("name") or ref.name
    provider = (spec.get("traffic") or {}).get("provider") or "Router"
    name = f"ModelDeployment {ref.name!r}"
    if provider not in CALLABLE_MODEL_DEPLOYMENT_PROVIDERS:
        message = (
            f"{name} uses traffic provider {provider}, which has no Service inside the cluster for a "
            f"graph to call; use {' or '.join(CALLABLE_MODEL_DEPLOYMENT_PROVIDERS)}"
        )
        return Component(ref, False, UNREACHABLE, message, model)
    phase = status.get("phase") or "Pending"
    stable, failed = status.get("stableRevision"), status.get("failedRevision")
    said = f": {status['message']}" if status.get("message") else ""
    if not stable:
        return Component(ref, False, NOT_READY, f"{name} has no stable revision yet ({phase}{said})", model)
    if phase == "Degraded" and failed:
        message = f"{name} rolled back {failed}{said}; serving {stable}"
        return Component(ref, True, ROLLED_BACK, message, model)
    if phase == "Degraded":
        return Component(ref, False, NOT_READY, f"{name} is Degraded{said}", model)
    if phase in ("Progressing", "Paused") and status.get("candidateRevision"):
        message = f"{name} {phase}: {model_deployment_split(status)}"
        return Component(ref, True, PROGRESSING, message, model)
    if not _ready(status):  # e.g. the first revision is still starting: nothing answers yet
        return Component(
            ref, False, NOT_READY, f"{name} {phase}: revision {stable} is not serving yet{said}", model
        )
    return Component(ref, True, READY, f"{name} {phase}: serving {stable}", model)


def _ready(status: Mapping[str, Any]) -> bool:
    """The ModelDeployment's own ``Ready`` condition: a revision is ready and serving."""
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])


def _experiment(ref: ComponentRef, obj: Obj) -> Component:
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    provider = (spec.get("traffic") or {}).get("provider") or "Router"
    name = f"Experiment {ref.name!r}"
    if provider != "Router":
        message = f"{name} uses traffic provider {provider}; a graph calls experiments through their router"
        return Component(ref, False, UNREACHABLE, message, ref.name)
    phase = status.get("phase") or "Pending"
    said = f": {status['message']}" if status.get("message") else ""
    if phase in ("Running", "Concluded", "Stopped"):
        winner = (status.get("winner") or {}).get("variant")
        detail = f"winner {winner}" if winner else experiment_split(status)
        return Component(ref, True, READY, f"{name} {phase}: {detail}", ref.name)
    return Component(ref, False, NOT_READY, f"{name} is {phase}{said}", ref.name)


def model_deployment_split(status: Mapping[str, Any]) -> str:
    """``a1b2c3 90%, d4e5f6 10% (shadow 20%)`` from a ModelDeployment's status weights."""
    parts = []
    for weight in status.get("weights") or []:
        text = f"{weight.get('revision')} {weight.get('desired', 0)}%"
        if weight.get("shadow"):
            text += f" (shadow {weight['shadow']}%)"
        parts.append(text)
    return ", ".join(parts) or status.get("weightsSummary") or "-"


def experiment_split(status: Mapping[str, Any]) -> str:
    """``baseline 70%, deep 30%`` from an Experiment's status variants."""
    variants = status.get("variants") or []
    return ", ".join(f"{v.get('name')} {v.get('weight', 0)}%" for v in variants) or "-"


def traffic_split(ref: ComponentRef, obj: Obj | None) -> str:
    """The component's current split, as its status says."""
    if obj is None:
        return "-"
    status = obj.get("status") or {}
    if ref.kind == MODEL_DEPLOYMENT.kind:
        return model_deployment_split(status)
    return experiment_split(status)
