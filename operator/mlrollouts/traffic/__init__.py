"""Traffic providers: Router, GatewayAPI, IngressNginx and Service behind one small interface."""

from mlrollouts.traffic.base import (
    ObjectRef,
    Readback,
    TrafficContext,
    TrafficRouter,
    UnsupportedTraffic,
    ref_of,
)
from mlrollouts.traffic.factory import PROVIDERS, provider_for

__all__ = [
    "PROVIDERS",
    "ObjectRef",
    "Readback",
    "TrafficContext",
    "TrafficRouter",
    "UnsupportedTraffic",
    "provider_for",
    "ref_of",
]
