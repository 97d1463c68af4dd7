"""Running an application under uvicorn with the settings both servers share."""

from __future__ import annotations

from typing import Any


def run_uvicorn(
    app: Any, *, host: str, port: int, http: Any, drain_seconds: float, backlog: int, **options: Any
) -> bool:
    """Serve until SIGTERM/SIGINT, then drain in-flight requests for up to ``drain_seconds``.

    uvloop, no access log and no ``server``/``date`` headers (per-request work nobody reads).
    ``http`` is ``"httptools"`` or a protocol class; ``options`` go to ``uvicorn.Config``.
    Returns whether the server started (the port was bound and start-up succeeded).
    """
    import uvicorn

    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        loop="uvloop",
        http=http,
        lifespan="on",
        access_log=False,
        server_header=False,
        date_header=False,
        timeout_graceful_shutdown=drain_seconds,  # type: ignore[arg-type]  # uvicorn waits any number of seconds
        backlog=backlog,
        **options,
    )
    server = uvicorn.Server(config)
    server.run()
    return server.started
