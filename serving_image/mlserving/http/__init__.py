"""The HTTP transport the model server and the router share.

Plain ASGI, no framework on the hot path: one error type answered as ``{"error": "..."}``, one body
reader (size limit, client disconnect), the lifespan protocol, and send helpers. The uvicorn
protocol that writes each response in one system call lives in ``mlserving.http.transport`` and
the uvicorn runner in ``mlserving.http.run`` (imported only by the commands that start a server).
"""

from mlserving.http.asgi import Application, Receive, Scope, Send
from mlserving.http.body import int_header, read_body
from mlserving.http.errors import ClientDisconnected, Headers, HttpError, error_body, require_method
from mlserving.http.send import JSON_HEADERS, error_response, send_body, send_error, send_json

__all__ = [
    "JSON_HEADERS",
    "Application",
    "ClientDisconnected",
    "Headers",
    "HttpError",
    "Receive",
    "Scope",
    "Send",
    "error_body",
    "error_response",
    "int_header",
    "read_body",
    "require_method",
    "send_body",
    "send_error",
    "send_json",
]
