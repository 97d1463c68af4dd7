"""API errors rendered as Kubernetes ``Status`` objects, worded the way a real API server words them."""

from __future__ import annotations

from typing import Any

import attrs
from kmock import KubernetesError

from .resources import ResourceType


@attrs.frozen
class ApiError(KubernetesError):
    """A failed API call: HTTP status, machine-readable ``reason``, human ``message``, ``details``."""

    def to_status(self) -> dict[str, Any]:
        status: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message or "",
            "reason": self.reason or "",
            "code": self.status,
        }
        if self.details:
            status["details"] = self.details
        return status


def _details(rt: ResourceType | None, name: str | None, **extra: Any) -> dict[str, Any]:
    details: dict[str, Any] = {}
    if name:
        details["name"] = name
    if rt is not None:
        if rt.group:
            details["group"] = rt.group
        details["kind"] = rt.plural
    details.update(extra)
    return details


def not_found(rt: ResourceType, name: str) -> ApiError:
    return ApiError(404, "NotFound", f'{rt.group_resource} "{name}" not found', _details(rt, name))


def namespace_not_found(name: str) -> ApiError:
    return ApiError(404, "NotFound", f'namespaces "{name}" not found', {"name": name, "kind": "namespaces"})


def no_such_resource(path: str) -> ApiError:
    return ApiError(404, "NotFound", "the server could not find the requested resource", {"path": path})


def already_exists(rt: ResourceType, name: str) -> ApiError:
    return ApiError(409, "AlreadyExists", f'{rt.group_resource} "{name}" already exists', _details(rt, name))


def conflict(rt: ResourceType, name: str, why: str | None = None) -> ApiError:
    why = why or "the object has been modified; please apply your changes to the latest version and try again"
    return ApiError(
        409,
        "Conflict",
        f'Operation cannot be fulfilled on {rt.group_resource} "{name}": {why}',
        _details(rt, name),
    )


def bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message, None)


def forbidden(rt: ResourceType, name: str, why: str) -> ApiError:
    return ApiError(403, "Forbidden", f'{rt.group_resource} "{name}" is forbidden: {why}', _details(rt, name))


def method_not_allowed() -> ApiError:
    return ApiError(
        405, "MethodNotAllowed", "the server does not allow this method on the requested resource", None
    )


def unsupported_media_type(content_type: str, accepted: list[str]) -> ApiError:
    return ApiError(
        415,
        "UnsupportedMediaType",
        f"the body of the request was in an unknown format - accepted media types include: {', '.join(accepted)}"
        + (f" (got {content_type!r})" if content_type else ""),
        None,
    )


def gone(message: str) -> ApiError:
    return ApiError(410, "Expired", message, None)


def invalid(rt: ResourceType, name: str, errors: list[FieldError]) -> ApiError:
    """422 Invalid listing every field error, e.g. ``spec.steps[1].weight: Invalid value: 150: ...``."""
    texts = [err.text() for err in errors]
    joined = texts[0] if len(texts) == 1 else "[" + ", ".join(texts) + "]"
    message = f'{rt.qualified_kind} "{name}" is invalid: {joined}'
    causes = [{"reason": err.reason, "message": err.body(), "field": err.field} for err in errors]
    details = {"name": name, "kind": rt.kind, "causes": causes}
    if rt.group:
        details["group"] = rt.group
    return ApiError(422, "Invalid", message, details)


def internal(message: str) -> ApiError:
    return ApiError(500, "InternalError", message, None)


# Error types of apimachinery's field.Error, with their reason codes and wording.
_FIELD_ERROR_TYPES = {
    "Required": ("FieldValueRequired", "Required value"),
    "Invalid": ("FieldValueInvalid", "Invalid value"),
    "Unsupported": ("FieldValueNotSupported", "Unsupported value"),
    "Duplicate": ("FieldValueDuplicate", "Duplicate value"),
    "Forbidden": ("FieldValueForbidden", "Forbidden"),
    "TooLong": ("FieldValueTooLong", "Too long"),
    "TooMany": ("FieldValueTooMany", "Too many"),
}
_SHOWS_VALUE = {"Invalid", "Unsupported", "Duplicate", "TooMany"}


def format_value(value: Any) -> str:
    """Render a value like Go's ``%#v``/``%q`` does in field errors."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if value is None:
        return "null"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, dict):
        return '"object"'
    if isinstance(value, list):
        return '"array"'
    return repr(value)


@attrs.frozen
class FieldError:
    """One invalid field: ``<field>: <Type>[: <value>][: <detail>]``."""

    type: str
    field: str
    value: Any = None
    detail: str = ""

    @property
    def reason(self) -> str:
        return _FIELD_ERROR_TYPES[self.type][0]

    def body(self) -> str:
        text = _FIELD_ERROR_TYPES[self.type][1]
        if self.type in _SHOWS_VALUE:
            text += f": {format_value(self.value)}"
        if self.detail:
            text += f": {self.detail}"
        return text

    def text(self) -> str:
        return f"{self.field or '<nil>'}: {self.body()}"
