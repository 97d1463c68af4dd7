"""The checks of an Open Inference Protocol request that the model server and the router's graphs share.

Plain Python over the decoded JSON document (no numpy), so the router runs them without the
server's tensor machinery. Every error is a ``ProtocolError`` naming the place in the request.
"""

from __future__ import annotations

from typing import Any

from mlserving.http.errors import HttpError


class ProtocolError(HttpError):
    """A request that will not be served; ``status`` is the protocol's status code (4xx, 503)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(status, message)


def tensor_name(item: Any, where: str, seen: set[str]) -> str:
    """The name of the request tensor ``item`` (at ``where``), unique among the names in ``seen``."""
    if not isinstance(item, dict):
        raise ProtocolError(f"{where} must be an object with name, shape, datatype and data")
    name = item.get("name")
    if not isinstance(name, str) or not name:
        raise ProtocolError(f"{where}.name must be a non-empty string")
    if name in seen:
        raise ProtocolError(f"{where}.name {name!r} appears more than once")
    seen.add(name)
    return name


def v1_rows(document: Any) -> tuple[str, list[Any]]:
    """The rows of a KServe V1 request and the key that holds them (``instances``, or ``inputs``)."""
    if not isinstance(document, dict):
        raise ProtocolError("request body must be a JSON object with 'instances'")
    key = "instances" if "instances" in document else "inputs" if "inputs" in document else None
    if key is None or not isinstance(document[key], list) or not document[key]:
        raise ProtocolError("'instances' must be a non-empty array of rows")
    return key, document[key]
