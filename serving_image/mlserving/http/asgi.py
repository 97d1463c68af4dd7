"""ASGI callables, and the application shape both servers share: HTTP to ``handle``, lifespan to
``startup`` and ``shutdown``."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from mlserving.http.lifespan import serve_lifespan

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class Application:
    """An ASGI application; subclasses answer requests in ``handle``."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self.handle(scope, receive, send)
        elif kind == "lifespan":
            await serve_lifespan(receive, send, self.startup, self.shutdown)

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        raise NotImplementedError

    async def startup(self) -> None:
        """Runs before the first request."""

    async def shutdown(self) -> None:
        """Runs after the last in-flight request finished (uvicorn drains them first)."""
