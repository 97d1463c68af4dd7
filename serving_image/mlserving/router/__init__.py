"""mlserving.router: weighted split, sticky assignment, shadow traffic, feedback attribution, and
graphs of components behind one model name (``mlserving.router.graph``).

The route table model (``RouteTable`` and friends) is shared with the operator, which writes it
into the router's ConfigMap under ``ROUTES_CONFIGMAP_KEY``.
"""

from mlserving.router.table import (
    ROUTES_CONFIGMAP_KEY,
    Feedback,
    Route,
    RouteTable,
    RouteTableError,
    Shadow,
    Stickiness,
    Timeouts,
    Variant,
)

__all__ = [
    "ROUTES_CONFIGMAP_KEY",
    "Feedback",
    "Route",
    "RouteTable",
    "RouteTableError",
    "Shadow",
    "Stickiness",
    "Timeouts",
    "Variant",
]
