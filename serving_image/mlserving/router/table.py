"""The route table: which variants serve a model, with which weights, stickiness and shadow.

This model is the contract between the operator (which writes it into a ConfigMap under
``ROUTES_CONFIGMAP_KEY``) and the router (which reads it from that ConfigMap or from a file).
Field names are snake_case in Python and camelCase in YAML/JSON, like Kubernetes objects.

Example (YAML)::

    routes:
      - name: iris
        model: iris
        variants:
          - {name: stable, upstreams: ["http://iris-5f2a1c:8080"], weight: 90}
          - {name: canary, upstreams: ["http://iris-9b3e7d:8080"], weight: 10}
        stickiness: {header: x-user-id}
        shadow: {variant: candidate, percent: 20}
        timeouts: {connectSeconds: 1, requestSeconds: 10}
        outlierDetection: {consecutiveFailures: 5, baseEjectionSeconds: 30}

A route serves either ``variants`` or a ``graph`` (a composite model: see ``mlserving.router.graph``)::

      - name: credit
        model: credit-score
        graph:
          root: score
          nodes:
            - {name: income, type: Model, upstream: "http://credit-income:8080", model: credit-income}
            - {name: history, type: Model, upstream: "http://credit-history:8080", model: credit-history}
            - {name: score, type: Ensemble, children: [income, history], combiner: {type: mean}}
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Any, Self

import yaml
from pydantic import Field, ValidationError, ValidationInfo, field_validator, model_validator

from mlserving.router.graph.model import Graph
from mlserving.router.spec import CamelSpec, ModelName, check_http_url, dns_label, repeated

ROUTES_CONFIGMAP_KEY = "routes.yaml"
"""The key of the route table inside the router's ConfigMap (``data[ROUTES_CONFIGMAP_KEY]``)."""


class RouteTableError(ValueError):
    """A route table that cannot be used; the message names the offending field."""


class Timeouts(CamelSpec):
    """Upstream timeouts of a variant (seconds)."""

    connect_seconds: float = Field(default=1.0, gt=0, le=60, description="TCP connect timeout.")
    request_seconds: float = Field(
        default=30.0, gt=0, le=3600, description="Whole upstream request timeout; exceeded -> 504."
    )


class OutlierDetection(CamelSpec):
    """When an endpoint of a variant leaves its rotation (see ``mlserving.router.outliers``)."""

    consecutive_failures: int = Field(
        default=5,
        ge=1,
        le=1000,
        description="Gateway failures in a row (connect failure, timeout, dropped connection, 502/503/504) "
        "that eject an endpoint.",
    )
    base_ejection_seconds: float = Field(
        default=30.0, gt=0, le=3600, description="First ejection; each further one lasts one more multiple."
    )
    max_ejection_seconds: float = Field(default=300.0, gt=0, le=86400, description="Longest ejection.")
    max_ejected_percent: float = Field(
        default=50.0,
        ge=0,
        le=100,
        description="Share of a variant's endpoints out at once (at least one of two or more); 0 disables.",
    )

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.max_ejection_seconds < self.base_ejection_seconds:
            raise ValueError(
                f"maxEjectionSeconds ({self.max_ejection_seconds:g}) is below "
                f"baseEjectionSeconds ({self.base_ejection_seconds:g})"
            )
        return self


class Variant(CamelSpec):
    """One arm of a route: a set of equivalent upstream endpoints and its traffic weight."""

    name: Annotated[str, dns_label("variant name")] = Field(
        description="Variant name; appears in x-mlrollouts-variant, ids and metric labels."
    )
    upstreams: list[str] = Field(min_length=1, description="Base URLs, e.g. http://iris-5f2a1c:8080.")
    weight: float = Field(default=0.0, ge=0, description="Relative traffic weight (any positive scale).")
    model: ModelName | None = Field(
        default=None, description="Model name on the upstream, when it differs from the route's model."
    )
    timeouts: Timeouts | None = Field(default=None, description="Overrides the route's timeouts.")

    @field_validator("upstreams")
    @classmethod
    def _upstreams(cls, value: list[str]) -> list[str]:
        cleaned = [check_http_url(url, "upstream", "base URL") for url in value]
        if len(set(cleaned)) != len(cleaned):
            raise ValueError("upstreams must be distinct")
        return cleaned

    @field_validator("weight")
    @classmethod
    def _finite(cls, value: float) -> float:
        if not math.isfinite(value):
            raise ValueError("weight must be finite")
        return value


class Stickiness(CamelSpec):
    """Where the sticky key comes from: a request header or a cookie (exactly one)."""

    header: str | None = Field(default=None, description="Request header holding the sticky key.")
    cookie: str | None = Field(default=None, description="Cookie holding the sticky key.")

    @model_validator(mode="after")
    def _exactly_one(self) -> Self:
        if (self.header is None) == (self.cookie is None):
            raise ValueError("stickiness needs exactly one of 'header' or 'cookie'")
        if self.header is not None and not re.match(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$", self.header):
            raise ValueError(f"stickiness.header {self.header!r} is not a valid header name")
        return self


class Shadow(CamelSpec):
    """Mirror a percent of the route's requests to a variant; its answers are compared, never returned."""

    variant: str = Field(description="Name of a variant of this route (usually with weight 0).")
    percent: float = Field(ge=0, le=100, description="Share of requests mirrored, 0..100.")
    relative_tolerance: float = Field(
        default=1e-3, ge=0, description="Regression outputs agree when within this relative difference."
    )


class Feedback(CamelSpec):
    """How long a response id can be credited with feedback."""

    id_ttl_seconds: float = Field(default=7 * 24 * 3600, gt=0, description="Age after which an id expires.")


class Route(CamelSpec):
    """One entry point: requests for ``model`` are split over ``variants``, or run through a ``graph``."""

    name: Annotated[str, dns_label("route name")] = Field(
        description="Route name; the `route` label of mlrouter_* metrics."
    )
    model: ModelName = Field(
        description="Model name clients use in /v2/models/{model}/... and /v1/models/{model}."
    )
    # Declared before variants so that the variants check knows whether this is a graph route.
    graph: Graph | None = Field(
        default=None, description="A composite model: a graph of components instead of variants."
    )
    variants: list[Variant] = Field(default_factory=list)
    stickiness: Stickiness | None = None
    shadow: Shadow | None = None
    timeouts: Timeouts = Field(default_factory=Timeouts)
    outlier_detection: OutlierDetection = Field(default_factory=OutlierDetection)
    feedback: Feedback = Field(default_factory=Feedback)

    @field_validator("variants")
    @classmethod
    def _variants(cls, value: list[Variant], info: ValidationInfo) -> list[Variant]:
        # "graph" is missing from info.data when it failed validation: that error is the one to report.
        if "graph" not in info.data:
            return value
        if info.data["graph"] is None and not value:
            raise ValueError("a route needs at least one variant (or a graph)")
        if info.data["graph"] is not None and value:
            raise ValueError("a graph route has no variants: its Model nodes name the components")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.graph is not None:
            for field in ("stickiness", "shadow"):
                if getattr(self, field) is not None:
                    raise ValueError(f"{field}: not available on a graph route (set it on the components)")
            return self
        names = [v.name for v in self.variants]
        if duplicates := repeated(names):
            raise ValueError(f"duplicate variant names: {duplicates}")
        total = sum(v.weight for v in self.variants)
        if not total > 0:
            raise ValueError(f"variant weights must sum to a positive total (got {total})")
        if self.shadow is not None and self.shadow.variant not in names:
            raise ValueError(f"shadow.variant {self.shadow.variant!r} is not one of the variants {names}")
        return self

    def variant(self, name: str) -> Variant | None:
        return next((variant for variant in self.variants if variant.name == name), None)

    def timeouts_for(self, variant: Variant) -> Timeouts:
        return variant.timeouts or self.timeouts


class RouteTable(CamelSpec):
    """All routes served by one router."""

    routes: list[Route] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique(self) -> Self:
        for attr in ("name", "model"):
            if duplicates := repeated([getattr(r, attr) for r in self.routes]):
                raise ValueError(f"duplicate route {attr}s: {duplicates}")
        return self

    def route_for_model(self, model: str) -> Route | None:
        return next((route for route in self.routes if route.model == model), None)

    # -- serialisation -------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """The camelCase document (no defaults omitted, so readers see every effective value)."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def to_configmap_data(self) -> dict[str, str]:
        """The ``data`` of the router's ConfigMap."""
        return {ROUTES_CONFIGMAP_KEY: self.to_yaml()}

    @classmethod
    def from_yaml(cls, text: str) -> RouteTable:
        """Parse YAML (or JSON); raise RouteTableError naming the offending field."""
        try:
            document = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise RouteTableError(f"route table is not valid YAML: {exc}") from None
        if document is None:
            document = {}
        if not isinstance(document, dict):
            raise RouteTableError("route table must be a mapping with a 'routes' list")
        return cls.from_dict(document)

    @classmethod
    def from_dict(cls, document: dict[str, Any]) -> RouteTable:
        try:
            return cls.model_validate(document)
        except ValidationError as exc:
            raise RouteTableError(format_validation_error(exc)) from None


def format_validation_error(exc: ValidationError) -> str:
    """One line per problem, each naming its location, e.g. ``routes.0.variants.1.weight: ...``."""
    parts = []
    for error in exc.errors(include_url=False):
        location = ".".join(str(p) for p in error["loc"]) or "<root>"
        message = error["msg"].removeprefix("Value error, ")
        parts.append(f"{location}: {message}")
    return "invalid route table: " + "; ".join(parts)
