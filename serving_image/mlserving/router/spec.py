"""What the route table and the graphs in it share: camelCase documents and the rules for their names.

Names end up in metric labels, response ids ("." separated) and URLs, so they are DNS-1123 labels;
model names follow the server's rules for the path segment of /v2/models/{m}.
"""

from __future__ import annotations

import re
from functools import partial
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict
from pydantic.alias_generators import to_camel

DNS_LABEL_RE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
MODEL_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
HTTP_URL_RE = re.compile(r"^https?://[^/\s?#]+(/[^\s?#]*)?$")


class CamelSpec(BaseModel):
    """snake_case in Python, camelCase in YAML/JSON (like Kubernetes objects); frozen, no extra fields."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True, validate_default=True
    )


def repeated(values: list[str]) -> list[str]:
    """The values that occur more than once, sorted."""
    return sorted({value for value in values if values.count(value) > 1})


def check_dns_label(value: str, what: str, rule: str = "lowercase letters, digits, '-', ≤63") -> str:
    if not DNS_LABEL_RE.match(value):
        raise ValueError(f"{what} {value!r} must be a DNS-1123 label ({rule})")
    return value


def dns_label(what: str, rule: str = "lowercase letters, digits, '-', ≤63") -> AfterValidator:
    """The check of a name field: ``Annotated[str, dns_label("route name")]``."""
    return AfterValidator(partial(check_dns_label, what=what, rule=rule))


def check_model_name(value: str) -> str:
    if not MODEL_NAME_RE.match(value):
        raise ValueError(f"model {value!r} is not a valid model name")
    return value


ModelName = Annotated[str, AfterValidator(check_model_name)]
"""A model name as it appears in /v2/models/{model}."""


def check_http_url(value: str, what: str, kind: str = "URL") -> str:
    """The URL without its trailing slash, so paths can be appended as they are."""
    if not HTTP_URL_RE.match(value):
        raise ValueError(f"{what} {value!r} must be an http(s) {kind} without query or fragment")
    return value.rstrip("/")
