"""The traffic provider interface: what every way of splitting traffic between revisions implements.

A provider never talks to the API server itself. The controller asks it for the objects that realise
the entry point (:meth:`TrafficRouter.reconcile`) and the weights (:meth:`TrafficRouter.set_weights`),
applies them, reads back the objects named by :meth:`TrafficRouter.read_back` and asks
:meth:`TrafficRouter.verify` what it can trust. :meth:`TrafficRouter.finalize` names what to delete
when the resource switches to another provider.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from mlrollouts.builders import Object, Owner
from mlrollouts.builders.common import DEFAULT_UPSTREAM_TEMPLATE
from mlrollouts.builders.serving import DEFAULT_SERVING_IMAGE


@dataclass(frozen=True)
class ObjectRef:
    api_version: str
    kind: str
    name: str
    namespace: str


@dataclass(frozen=True)
class TrafficContext:
    """What a provider needs to know about the resource being routed."""

    owner: Owner
    model: str
    stable: str | None
    candidate: str | None
    config: Any = None
    """The provider's section of ``spec.traffic`` (API model), or ``None``."""
    serving_image: str = DEFAULT_SERVING_IMAGE
    replicas: int = 1
    upstream_template: str = DEFAULT_UPSTREAM_TEMPLATE
    extra: Mapping[str, Any] = field(default_factory=dict)

    def upstream(self, service: str) -> str:
        return self.upstream_template.format(service=service, namespace=self.owner.namespace)


@dataclass(frozen=True)
class Readback:
    """What the provider can confirm from the live objects."""

    confirmed: dict[str, int] | None
    """Weights the provider vouches for (compared with the desired ones); ``None`` = cannot confirm."""
    effective: dict[str, int] | None = None
    """Weights actually realised, when they differ from the requested ones (replica ratio)."""
    message: str = ""


class TrafficRouter(abc.ABC):
    """One way of splitting traffic between the revisions of a ModelDeployment."""

    name: str = ""
    max_arms: int | None = None
    """How many revisions may receive traffic at once (``None`` = any number)."""
    supports_shadow: bool = False

    @abc.abstractmethod
    def reconcile(self, ctx: TrafficContext) -> list[Object]:
        """Objects of the entry point that do not depend on the weights."""

    @abc.abstractmethod
    def set_weights(
        self, ctx: TrafficContext, weights: Mapping[str, int], shadow: tuple[str, int] | None
    ) -> list[Object]:
        """Objects that carry the weights (percent per revision) and the shadow share."""

    @abc.abstractmethod
    def read_back(self, ctx: TrafficContext) -> list[ObjectRef]:
        """Live objects :meth:`verify` needs."""

    @abc.abstractmethod
    def verify(
        self, ctx: TrafficContext, weights: Mapping[str, int], live: Mapping[ObjectRef, Object | None]
    ) -> Readback:
        """What the live objects confirm about the requested ``weights``."""

    @abc.abstractmethod
    def finalize(self, ctx: TrafficContext) -> list[ObjectRef]:
        """Objects to delete when this provider stops routing the resource."""

    def replicas(
        self, ctx: TrafficContext, weights: Mapping[str, int], planned: Mapping[str, int]
    ) -> dict[str, int]:
        """Replicas per revision; providers that split by replica count override this."""
        return dict(planned)

    def gates_readiness(self) -> bool:
        """False when a revision only gets pods once it gets traffic (readiness shows in ``verify``)."""
        return True


def ref_of(obj: Object) -> ObjectRef:
    meta = obj["metadata"]
    return ObjectRef(obj["apiVersion"], obj["kind"], meta["name"], meta["namespace"])


def positive(weights: Mapping[str, int] | None) -> dict[str, int]:
    return {k: int(v) for k, v in (weights or {}).items() if v > 0}


class UnsupportedTraffic(ValueError):
    """The requested split cannot be expressed by this provider (the message names why)."""


def deployment_ready(obj: Object | None) -> bool:
    if not obj:
        return False
    status = obj.get("status") or {}
    wanted = (obj.get("spec") or {}).get("replicas", 1)
    return int(status.get("readyReplicas") or 0) >= max(int(wanted), 1)
