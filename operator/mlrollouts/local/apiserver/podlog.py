"""``GET .../pods/NAME/log`` (``kubectl logs``): a container's output as the process kubelet keeps it.

The kubelet of the playground runs on the same machine and writes each container's output to
``<pod logs dir>/<namespace>/<pod>/<container>.log`` (the previous run's output, after a restart, to
``<container>.previous.log``). The emulator serves those files when it is given that directory.
Supported query parameters: ``container``, ``previous``, ``tailLines``, ``limitBytes`` and ``follow``
(new output is streamed until the pod is deleted or the client goes away).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp.web
from kmock import Request

from .errors import ApiError

FOLLOW_POLL_SECONDS = 0.25
_TRUE = ("true", "1")


def log_path(root: Path, namespace: str, pod: str, container: str, previous: bool = False) -> Path:
    suffix = ".previous.log" if previous else ".log"
    return root / namespace / pod / f"{container}{suffix}"


def _bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message)


def _int_param(request: Request, name: str) -> int | None:
    raw = request.params.get(name)
    if raw is None:
        return None
    try:
        value = int(raw)
    except ValueError:
        raise _bad_request(f"{name}: must be an integer, got {raw!r}") from None
    if value < 0:
        raise _bad_request(f"{name}: must be >= 0, got {value}")
    return value


def container_of(pod: dict[str, Any], requested: str | None) -> str:
    """The container to read: the one asked for, or the pod's only one."""
    names = [c.get("name", "") for c in (pod.get("spec") or {}).get("containers") or []]
    pod_name = pod["metadata"]["name"]
    if requested:
        if requested not in names:
            raise _bad_request(f"container {requested} is not valid for pod {pod_name}")
        return requested
    if len(names) != 1:
        raise _bad_request(
            f"a container name must be specified for pod {pod_name}, choose one of: [{' '.join(names)}]"
        )
    return names[0]


def tail(data: bytes, lines: int | None, limit: int | None) -> bytes:
    if lines is not None:
        kept = data.splitlines(keepends=True)
        data = b"".join(kept[-lines:]) if lines else b""
    if limit is not None:
        data = data[:limit]
    return data


def read(request: Request, root: Path | None, pod: dict[str, Any]) -> tuple[Path, bytes]:
    """The log file the request names, and what of it to answer first (``tailLines``, ``limitBytes``)."""
    meta = pod["metadata"]
    container = container_of(pod, request.params.get("container"))
    previous = request.params.get("previous", "") in _TRUE
    if root is None:
        raise ApiError(
            503, "ServiceUnavailable", "this API server has no process kubelet's logs (no pod logs directory)"
        )
    path = log_path(root, meta.get("namespace", "default"), meta["name"], container, previous)
    if not path.exists():
        what = "previous terminated container" if previous else "container"
        raise _bad_request(f'{what} "{container}" in pod "{meta["name"]}" has no log yet')
    return path, tail(path.read_bytes(), _int_param(request, "tailLines"), _int_param(request, "limitBytes"))


def read_new(path: Path, offset: int) -> tuple[bytes, int] | None:
    """What was written to ``path`` after ``offset``, and the new offset; None once the file is gone."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return None
    if size < offset:  # the container restarted: its new log starts from the top
        offset = 0
    if size == offset:
        return b"", offset
    with open(path, "rb") as fh:
        fh.seek(offset)
        return fh.read(size - offset), size


async def serve(
    request: Request,
    root: Path | None,
    pod: dict[str, Any],
    pod_exists: Callable[[], bool],
) -> aiohttp.web.StreamResponse:
    """The log of ``pod`` (already read from the store); ``pod_exists`` ends a ``follow``."""
    path, data = read(request, root, pod)
    follow = request.params.get("follow", "") in _TRUE and request.params.get("previous", "") not in _TRUE
    if not follow:
        return aiohttp.web.Response(body=data, content_type="text/plain")
    response = aiohttp.web.StreamResponse(headers={"Content-Type": "text/plain"})
    assert request._raw_request is not None
    await response.prepare(request._raw_request)
    await response.write(data)
    offset = path.stat().st_size
    while pod_exists():
        await asyncio.sleep(FOLLOW_POLL_SECONDS)
        new = read_new(path, offset)
        if new is None:
            break
        chunk, offset = new
        if chunk:
            await response.write(chunk)
    await response.write_eof()
    return response
