"""SIGTERM drains in-flight requests: a request whose body is still arriving completes."""

from __future__ import annotations

import json
import signal
import socket
import time

import pytest

from support import wait_until
from support.models import serving

pytestmark = pytest.mark.integration


def test_sigterm_drains_in_flight_request_then_exits(iris, tmp_path):
    with serving(tmp_path, iris.classifier_onnx, name="iris") as server:
        body = json.dumps(server.infer_body(iris.features[:2])).encode()
        port = int(server.url.rsplit(":", 1)[1])
        sock = socket.create_connection(("127.0.0.1", port), timeout=20)
        try:
            head = (
                f"POST /v2/models/iris/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n"
            ).encode()
            sock.sendall(head + body[:10])  # the request is in flight: half of its body is missing
            time.sleep(0.3)
            server.proc.popen.send_signal(signal.SIGTERM)
            wait_until(
                lambda: "Shutting down" in server.proc.output(), timeout=10, message="shutdown started"
            )
            assert server.proc.alive()
            sock.sendall(body[10:])
            response = b""
            while b"\r\n\r\n" not in response or not response.rstrip().endswith(b"}"):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                response += chunk
        finally:
            sock.close()
        status_line, _, rest = response.partition(b"\r\n")
        assert b" 200 " in status_line, response
        payload = json.loads(rest.split(b"\r\n\r\n", 1)[1])
        assert payload["outputs"][0]["data"] == iris.labels[:2].tolist()
        server.proc.popen.wait(timeout=20)
        # uvicorn re-raises the captured SIGTERM after a clean shutdown, as the default handler would.
        assert server.proc.popen.returncode in (0, -signal.SIGTERM)
        assert "Finished server process" in server.proc.output()
