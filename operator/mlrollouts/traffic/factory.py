"""Traffic providers by the name used in ``spec.traffic.provider``."""

from __future__ import annotations

from mlrollouts.traffic.base import TrafficRouter
from mlrollouts.traffic.gateway_api import GatewayApiProvider
from mlrollouts.traffic.ingress_nginx import IngressNginxProvider
from mlrollouts.traffic.router import RouterProvider
from mlrollouts.traffic.service import ServiceProvider

PROVIDERS: dict[str, type[TrafficRouter]] = {
    RouterProvider.name: RouterProvider,
    GatewayApiProvider.name: GatewayApiProvider,
    IngressNginxProvider.name: IngressNginxProvider,
    ServiceProvider.name: ServiceProvider,
}


def provider_for(name: str) -> TrafficRouter:
    """The provider registered as ``name``; raises ValueError naming ``spec.traffic.provider``."""
    try:
        return PROVIDERS[name]()
    except KeyError:
        raise ValueError(
            f"spec.traffic.provider: unknown provider {name!r}; known: {', '.join(PROVIDERS)}"
        ) from None
