"""Building blocks shared by the three resources: base models, durations, quantities, query
templates, metric checks and the CEL rule helper used to put cross-field rules into the CRDs."""

from __future__ import annotations

import re
from collections.abc import Mapping
from enum import StrEnum
from types import UnionType
from typing import Annotated, Any, Generic, Literal, TypeVar, Union, get_args, get_origin

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    WithJsonSchema,
    model_validator,
)
from pydantic.alias_generators import to_camel
from pydantic_core import CoreSchema, PydanticCustomError, core_schema

from mlrollouts.core.durations import DURATION_PATTERN, parse_duration

# --- CEL rules ------------------------------------------------------------------------------------


def cel(rule: str, message: str, *, field: str | None = None) -> dict[str, str]:
    """One `x-kubernetes-validations` entry: a CEL rule the API server checks against `self`.

    `field` (relative to `self`) is named at the start of the message rather than given as
    `fieldPath`, which API servers before 1.28 reject.
    """
    return {"rule": rule, "message": f"{field}: {message}" if field else message}


def validations(*rules: dict[str, str]) -> dict[str, Any]:
    """`json_schema_extra` carrying CEL rules for a model or a field."""
    return {"x-kubernetes-validations": list(rules)}


DNS_LABEL_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS_SUBDOMAIN_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"


# --- JSON scalar types, as the API server checks them -----------------------------------------------

INT64_MAX = 2**63 - 1
"""The largest integer the API server stores; a larger one is decoded as a floating-point number."""
FLOAT_EXACT_INTEGER = 2**53
"""Beyond this a floating-point number is no longer an exact integer, so an integer field refuses it."""


def _is_json_integer(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return -INT64_MAX - 1 <= value <= INT64_MAX
    return isinstance(value, float) and value.is_integer() and abs(value) <= FLOAT_EXACT_INTEGER


def _is_json_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


_SCALAR_CHECKS: dict[str, tuple[Any, str]] = {
    "int": (_is_json_integer, "Input should be a valid integer (a whole number within 64 bits)"),
    "float": (_is_json_number, "Input should be a valid number"),
    "bool": (lambda value: isinstance(value, bool), "Input should be a valid boolean (true or false)"),
}


def _json_scalar_guard(kind: str) -> Any:
    accepts, message = _SCALAR_CHECKS[kind]

    def guard(value: Any) -> Any:
        if not accepts(value):
            raise PydanticCustomError(f"{kind}_type", message)
        return value

    return guard


def _strict_json_scalars(schema: Any, model: type[BaseModel]) -> Any:
    """``schema`` with every integer, number and boolean checked by its JSON type first.

    Pydantic's lax mode converts ``"true"`` and ``"2"`` where the CRD refuses them, and its strict
    mode refuses enum values given as strings, so only these three scalar types are made strict.
    Nested models are left alone: they are API models and guard their own fields.
    """
    if isinstance(schema, list):
        return [_strict_json_scalars(item, model) for item in schema]
    if not isinstance(schema, dict):
        return schema
    kind = schema.get("type")  # a key of a mapping of fields may be named "type" too
    if kind == "model" and schema.get("cls") is not model:
        return schema
    if isinstance(kind, str) and kind in _SCALAR_CHECKS:
        return core_schema.no_info_before_validator_function(_json_scalar_guard(kind), schema)
    return {key: _strict_json_scalars(value, model) for key, value in schema.items()}


# --- base models ----------------------------------------------------------------------------------


class ApiModel(BaseModel):
    """A spec object: camelCase on the wire, unknown fields rejected, scalars of the right JSON type."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        use_enum_values=False,
        use_attribute_docstrings=True,  # a field's docstring is its description in the CRD
    )

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: type[BaseModel], handler: GetCoreSchemaHandler
    ) -> CoreSchema:
        return _strict_json_scalars(handler(source), cls)  # type: ignore[no-any-return]

    @model_validator(mode="before")
    @classmethod
    def _null_is_absent(cls, data: Any) -> Any:
        """``field: null`` reads as a missing field unless the field may be null, and a null value
        in a typed map as a missing entry, as the API server prunes both before defaulting."""
        if not isinstance(data, dict):
            return data
        result = {}
        for key, value in data.items():
            info = cls._field_by_key().get(key)
            if info is not None and value is None and type(None) not in get_args(info.annotation):
                continue
            result[key] = _without_null_entries(value, info.annotation) if info is not None else value
        return result

    @classmethod
    def _field_by_key(cls) -> dict[str, Any]:
        return {key: info for name, info in cls.model_fields.items() for key in (name, info.alias or name)}


def _without_null_entries(value: Any, annotation: Any) -> Any:
    """``value`` without the null entries of its typed maps (``dict[str, X]``, also inside lists);
    a free-form ``dict[str, Any]`` keeps its nulls, as the API server keeps them there."""
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is dict and isinstance(value, dict) and args[1:] != (Any,):
        return {k: _without_null_entries(v, args[1]) for k, v in value.items() if v is not None}
    if origin is list and isinstance(value, list) and args:
        return [_without_null_entries(item, args[0]) for item in value]
    if origin in (Union, UnionType):
        for arg in args:
            if arg is not type(None) and get_origin(arg) in (dict, list):
                return _without_null_entries(value, arg)
    return value


class StatusModel(BaseModel):
    """A status object written by the operator: camelCase, unknown fields ignored when read back."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")


class ObjectMeta(BaseModel):
    """The part of Kubernetes object metadata the operator reads; everything else is kept."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="allow")

    # the API server's rules for the names of custom resources and of namespaces
    name: str | None = Field(default=None, min_length=1, max_length=253, pattern=DNS_SUBDOMAIN_PATTERN)
    namespace: str | None = Field(default=None, min_length=1, max_length=63, pattern=DNS_LABEL_PATTERN)
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    uid: str | None = None
    generation: int | None = None
    resource_version: str | None = None


SpecT = TypeVar("SpecT", bound=BaseModel)
StatusT = TypeVar("StatusT", bound=BaseModel)


class CustomResource(BaseModel, Generic[SpecT, StatusT]):
    """The shape every kind of the API shares; no unknown top-level fields.

    A kind narrows ``kind`` to its own name (the field keeps its place, after ``apiVersion``).
    """

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")

    # a literal (the type checker needs one); a test keeps it equal to mlrollouts.core.names.API_VERSION
    api_version: Literal["mlrollouts.io/v1alpha1"] = "mlrollouts.io/v1alpha1"
    kind: str
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    spec: SpecT
    status: StatusT | None = None

    @model_validator(mode="before")
    @classmethod
    def _named(cls, data: Any) -> Any:
        """A manifest names its object (or asks the API server to), as the API server requires."""
        if isinstance(data, dict) and isinstance(data.get("metadata"), dict):
            meta = data["metadata"]
            if not meta.get("name") and not meta.get("generateName"):
                raise ValueError("metadata.name: Required value: name or generateName is required")
        return data


# --- scalar types ---------------------------------------------------------------------------------


Name = Annotated[str, Field(min_length=1, max_length=63, pattern=DNS_LABEL_PATTERN)]
"""A DNS-1123 label: names of checks, variants, nodes."""

ResourceName = Annotated[str, Field(min_length=1, max_length=253, pattern=DNS_SUBDOMAIN_PATTERN)]
"""The name of another Kubernetes object in the same namespace."""


def _check_duration(value: str) -> str:
    parse_duration(value)
    return value.strip()


Duration = Annotated[
    str,
    AfterValidator(_check_duration),
    WithJsonSchema({"type": "string", "pattern": DURATION_PATTERN, "maxLength": 32}),
]
"""A duration string; `parse_duration` turns it into seconds."""

# the pattern Kubernetes publishes for resource.Quantity
QUANTITY_PATTERN = r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
_QUANTITY_RE = re.compile(QUANTITY_PATTERN)


def _check_quantity(value: Any) -> str:
    # an integer or a string, as the CRD's int-or-string field takes it
    if not (isinstance(value, str) or (isinstance(value, int) and _is_json_integer(value))):
        raise ValueError("a quantity is an integer or a string such as 500m, 0.5, 2Gi")
    text = str(value).strip()
    if not _QUANTITY_RE.match(text):
        raise ValueError(f"invalid quantity {text!r}: use e.g. 500m, 1, 2Gi")
    return text


Quantity = Annotated[
    str,
    BeforeValidator(_check_quantity),
    WithJsonSchema({"x-kubernetes-int-or-string": True, "pattern": QUANTITY_PATTERN}),
]
"""A Kubernetes resource quantity, kept as a string (``500m``, ``2Gi``)."""


MAX_SAMPLES = 1_000_000_000
"""Upper bound of a sample count a spec may ask for before deciding."""
MAX_FEATURE_INDEX = 1_000_000
"""Upper bound of a feature index in a row."""

# --- model sources --------------------------------------------------------------------------------

MODEL_URI_SCHEMES = ("file", "http", "https", "s3")
"""The sources the model server loads from (``mlserving.storage.fetch_model``)."""
MODEL_URI_PATTERN = r"^(file:///|https?://[^/?#\s]+|s3://[^/?#\s]+)"
# RE2 (no look-around): ".." or its percent-encoded form as a whole path segment
PARENT_SEGMENT_PATTERN = r"(^|/)(\.|%2[eE])(\.|%2[eE])($|[/?#])"
MODEL_URI_SCHEME_MESSAGE = (
    "must start with file:///, http://, https:// or s3:// (the model server loads no other source)"
)
PARENT_SEGMENT_MESSAGE = "must not contain a '..' path segment (it climbs out of the model's directory)"


def _check_model_uri(value: str) -> str:
    if not re.match(MODEL_URI_PATTERN, value):
        raise ValueError(MODEL_URI_SCHEME_MESSAGE)
    if re.search(PARENT_SEGMENT_PATTERN, value):
        raise ValueError(PARENT_SEGMENT_MESSAGE)
    return value


def _cel_string(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


ModelUri = Annotated[
    str,
    AfterValidator(_check_model_uri),
    Field(
        min_length=1,
        max_length=2048,
        json_schema_extra=validations(
            cel(f"self.matches({_cel_string(MODEL_URI_PATTERN)})", MODEL_URI_SCHEME_MESSAGE),
            cel(f"!self.matches({_cel_string(PARENT_SEGMENT_PATTERN)})", PARENT_SEGMENT_MESSAGE),
        ),
    ),
]
"""Where a model file lives: file:///path, http(s)://host/path or s3://bucket/key."""


# --- metrics: Prometheus and checks -----------------------------------------------------------------


class PrometheusConfig(ApiModel):
    """Where the metrics live; unset fields fall back to the operator's defaults."""

    address: str | None = Field(default=None, max_length=2048, description="Prometheus base URL")
    timeout: Duration = Field(default="10s", description="timeout of one query")


class CheckTemplate(StrEnum):
    ERROR_RATE = "error-rate"
    LATENCY_P50 = "latency-p50"
    LATENCY_P95 = "latency-p95"
    LATENCY_P99 = "latency-p99"
    REQUEST_RATE = "request-rate"
    PREDICTION_DRIFT = "prediction-drift"
    SHADOW_AGREEMENT = "shadow-agreement"
    REWARD_RATE = "reward-rate"


QUERY_VARIABLES: tuple[str, ...] = (
    "namespace",
    "name",
    "model",
    "revision",
    "stable_revision",
    "variant",
    "interval",
)
"""Variables a custom query may use as ``{{ var }}``."""

_PLACEHOLDER = re.compile(r"\{\{\s*([^}]*?)\s*\}\}")
# The same rule as a regular expression CEL can evaluate with `matches` (RE2 syntax): outside of
# `{{ var }}` a `{` is never followed by another `{`.
QUERY_TEMPLATE_PATTERN = r"^([^{]|\{[^{]|\{\{\s*(" + "|".join(QUERY_VARIABLES) + r")\s*\}\})*\{?$"


class QueryTemplateError(ValueError):
    """A query template that cannot be filled in: an unknown variable, a ``{{`` that starts no
    placeholder, or a variable without a value."""


def query_variables(query: str) -> list[str]:
    """The ``{{ var }}`` names a query uses, in order of first use; raises `QueryTemplateError` for
    an unknown variable or an unbalanced ``{{``."""
    used = _PLACEHOLDER.findall(query)
    unknown = [var for var in used if var not in QUERY_VARIABLES]
    if unknown:
        raise QueryTemplateError(
            f"query uses unknown variable(s) {', '.join(repr(v) for v in unknown)}; "
            f"allowed: {', '.join(QUERY_VARIABLES)}"
        )
    if not re.match(QUERY_TEMPLATE_PATTERN, query, flags=re.DOTALL):
        raise QueryTemplateError("query has an unbalanced '{{': write variables as {{ name }}")
    return list(dict.fromkeys(used))


def fill_query(query: str, values: Mapping[str, str | None]) -> str:
    """``query`` with every ``{{ var }}`` replaced by its value (inserted as given: the caller
    escapes what its query language needs)."""
    query_variables(query)

    def value_of(match: re.Match[str]) -> str:
        value = values.get(match.group(1))
        if not value:
            raise QueryTemplateError(f"template variable {match.group(1)!r} has no value for this resource")
        return value

    return _PLACEHOLDER.sub(value_of, query)


def check_query(query: str | None, context: str = "") -> None:
    """A ``ValueError`` naming the ``query`` field (``context`` closes the message) when ``query``
    is not a template `fill_query` can fill."""
    if query is None:
        return
    try:
        query_variables(query)
    except QueryTemplateError as exc:
        raise ValueError(f"query: {exc}{context}") from None


# double(): evaluators that type numbers by their JSON form see `1` as an int
MIN_BELOW_MAX_RULE = cel(
    "!has(self.min) || !has(self.max) || double(self.min) < double(self.max)",
    "min must be below max",
    field="min",
)
"""A threshold pair ``min``/``max`` leaves room between them."""


def check_min_below_max(low: float | None, high: float | None, context: str = "") -> None:
    """`MIN_BELOW_MAX_RULE` for the models."""
    if low is not None and high is not None and not low < high:
        raise ValueError(f"min: min ({low}) must be below max ({high}){context}")


class Check(ApiModel):
    """One metric check: a built-in template or a custom PromQL query, with thresholds.

    ``min``/``max`` bound the candidate's value; ``maxRatioToStable`` bounds candidate / stable.
    """

    model_config = ConfigDict(
        json_schema_extra=validations(
            cel(
                "has(self.template) != has(self.query)",
                "a check needs exactly one of template or query",
            ),
            cel(
                "has(self.min) || has(self.max) || has(self.maxRatioToStable)",
                "a check needs a threshold: min, max or maxRatioToStable",
            ),
            MIN_BELOW_MAX_RULE,
            cel(
                "!has(self.query) || self.query.matches('"
                + QUERY_TEMPLATE_PATTERN.replace("\\", "\\\\")
                + "')",
                "query may only use the variables {{ " + " }}, {{ ".join(QUERY_VARIABLES) + " }}",
                field="query",
            ),
        )
    )

    name: Name
    """Name of the check; unique in its list, shown in status."""
    template: CheckTemplate | None = None
    """A built-in query: error-rate, latency-p50|p95|p99, request-rate, prediction-drift, shadow-agreement, reward-rate."""
    query: str | None = Field(default=None, min_length=1, max_length=4096)
    """A custom PromQL query; may use {{ namespace }} {{ name }} {{ model }} {{ revision }} {{ stable_revision }} {{ variant }} {{ interval }}."""
    min: float | None = None
    """The candidate fails below this value."""
    max: float | None = None
    """The candidate fails above this value."""
    max_ratio_to_stable: float | None = Field(default=None, gt=0)
    """The candidate fails when its value exceeds the stable revision's times this ratio."""
    window: Duration | None = Field(default=None, description="range of the query; default: the interval")

    @model_validator(mode="after")
    def _rules(self) -> Check:
        if (self.template is None) == (self.query is None):
            raise ValueError(f"needs exactly one of template or query (check {self.name!r})")
        if self.min is None and self.max is None and self.max_ratio_to_stable is None:
            raise ValueError(f"needs a threshold: min, max or maxRatioToStable (check {self.name!r})")
        check_min_below_max(self.min, self.max, f" (check {self.name!r})")
        check_query(self.query, f" (check {self.name!r})")
        return self


MAX_CHECKS = 32


def unique_names_rule(what: str) -> dict[str, str]:
    return cel("self.all(x, self.exists_one(y, y.name == x.name))", f"{what} names must be unique")


def check_unique_names(items: list[Any], what: str) -> None:
    seen: set[str] = set()
    for index, item in enumerate(items):
        if item.name in seen:
            raise ValueError(f"{what}[{index}].name: duplicate name {item.name!r}")
        seen.add(item.name)


Checks = Annotated[
    list[Check],
    Field(max_length=MAX_CHECKS, json_schema_extra=validations(unique_names_rule("check"))),
]


# --- traffic ------------------------------------------------------------------------------------


class Stickiness(ApiModel):
    """Keep a user on one variant: by a request header or a cookie."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            cel("!(has(self.header) && has(self.cookie))", "stickiness takes header or cookie, not both")
        )
    )

    header: str | None = Field(default=None, min_length=1, max_length=256)
    """Request header whose value keeps a user on one variant."""
    cookie: str | None = Field(default=None, min_length=1, max_length=256)
    """Cookie whose value keeps a user on one variant."""

    @model_validator(mode="after")
    def _one(self) -> Stickiness:
        if self.header is not None and self.cookie is not None:
            raise ValueError("stickiness takes header or cookie, not both")
        return self


class RouterConfig(ApiModel):
    """The mlserving router placed in front of the revisions."""

    replicas: int = Field(default=1, ge=1, le=100)
    """Router replicas; any replica attributes feedback correctly."""
    image: str | None = Field(default=None, max_length=1024, description="default: the serving image")
    stickiness: Stickiness | None = None


class ParentRef(ApiModel):
    """A Gateway API parent (usually a Gateway)."""

    name: ResourceName
    """Name of the parent, usually a Gateway."""
    namespace: str | None = Field(default=None, max_length=63)
    """Namespace of the parent; default: the resource's namespace."""
    section_name: str | None = Field(default=None, max_length=253)
    """Listener of the Gateway to attach to."""
    port: int | None = Field(default=None, ge=1, le=65535)
    """Port of the Gateway listener to attach to."""
    group: str = Field(default="gateway.networking.k8s.io", max_length=253)
    """API group of the parent."""
    kind: str = Field(default="Gateway", max_length=63)
    """Kind of the parent."""


class GatewayApiConfig(ApiModel):
    parent_refs: list[ParentRef] = Field(min_length=1, max_length=32)
    """Gateways the owned HTTPRoute attaches to."""
    hostnames: list[Annotated[str, Field(max_length=253)]] = Field(default_factory=list, max_length=16)
    """Hostnames the HTTPRoute matches."""


class IngressNginxConfig(ApiModel):
    host: str | None = Field(default=None, max_length=253)
    """Host of the Ingress rule; empty matches every host."""
    ingress_class_name: str = Field(default="nginx", max_length=253)
    """IngressClass of the ingress-nginx controller."""
    path: str = Field(default="/", max_length=1024)
    """Path prefix of the Ingress rule."""


class TrafficProvider(StrEnum):
    ROUTER = "Router"
    GATEWAY_API = "GatewayAPI"
    INGRESS_NGINX = "IngressNginx"
    SERVICE = "Service"


GatewayApiSection = Annotated[
    GatewayApiConfig | None, Field(alias="gatewayAPI", description="The HTTPRoute (provider GatewayAPI).")
]
"""``traffic.gatewayAPI`` of every kind."""
IngressNginxSection = Annotated[
    IngressNginxConfig | None, Field(description="The Ingresses (provider IngressNginx).")
]
"""``traffic.ingressNginx`` of every kind."""

GATEWAY_API_RULE = cel(
    "self.provider != 'GatewayAPI' || has(self.gatewayAPI)",
    "provider GatewayAPI needs gatewayAPI.parentRefs",
    field="gatewayAPI",
)
"""A traffic section with provider GatewayAPI names the Gateways to attach to."""


def check_gateway_api(provider: str, gateway_api: GatewayApiConfig | None) -> None:
    """`GATEWAY_API_RULE` for the models."""
    if provider == TrafficProvider.GATEWAY_API and gateway_api is None:
        raise ValueError(GATEWAY_API_RULE["message"])
