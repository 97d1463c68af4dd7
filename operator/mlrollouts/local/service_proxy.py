"""Cluster DNS and kube-proxy for HTTP on the playground: a forward proxy on a loopback port.

There is no cluster DNS on one machine, so ``http://<service>.<namespace>.svc:<port>`` does not
resolve. Processes of the playground get ``HTTP_PROXY`` pointing here (and ``NO_PROXY`` for
loopback), so the HTTP clients they already use (httpx, requests, urllib, aiohttp with
``trust_env``) send such requests to this proxy, which forwards each one to a ready endpoint of the
Service (round robin), as kube-proxy would. The process kubelet keeps the table of ready endpoints
current. Names it accepts: ``<service>.<namespace>.svc[.cluster.local]``, ``<service>.<namespace>``
and ``<service>`` (of any namespace, when only one has it). Other hosts are reached directly.
"""

from __future__ import annotations

import contextlib
import http.client
import itertools
import json
import logging
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

log = logging.getLogger("mlrollouts.kubelet.proxy")

# (namespace, service) -> service port -> local ports of the ready endpoints
EndpointTable = dict[tuple[str, str], dict[int, list[int]]]

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "content-length",
    }
)
UPSTREAM_TIMEOUT = 120.0
NO_PROXY_HOSTS = "127.0.0.1,localhost,::1"


class NotAService(LookupError):
    """The host names no Service of the playground: it is reached directly."""


class ServiceProxy:
    """The forward proxy (see the module docstring); ``update`` replaces its endpoint table."""

    def __init__(self, port: int = 0, host: str = "127.0.0.1") -> None:
        self._table: EndpointTable = {}
        self._turn = itertools.count()
        proxy = self

        class Handler(ProxyHandler):
            service_proxy = proxy

        self.server = ThreadingHTTPServer((host, port), Handler)
        self.server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def environment(self, existing_no_proxy: str = "") -> dict[str, str]:
        """The variables that send a process's HTTP requests for Services here."""
        no_proxy = ",".join(filter(None, [existing_no_proxy, NO_PROXY_HOSTS]))
        return {"HTTP_PROXY": self.url, "http_proxy": self.url, "NO_PROXY": no_proxy, "no_proxy": no_proxy}

    def start(self) -> ServiceProxy:
        self._thread = threading.Thread(target=self.server.serve_forever, name="service-proxy", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:  # shutdown() waits for a serve_forever loop that must be running
            self.server.shutdown()
            self._thread = None
        self.server.server_close()

    def update(self, table: EndpointTable) -> None:
        self._table = table  # one assignment: handler threads read either the old or the new table

    def endpoints(self, host: str, port: int) -> list[int]:
        """Local ports of the ready endpoints behind ``host:port``; NotAService when it names none."""
        table = self._table
        key = self._service_of(host, table)
        ports = table[key]
        if port not in ports:
            raise LookupError(f"service {key[1]} in namespace {key[0]} has no port {port}")
        if not ports[port]:
            raise LookupError(f"service {key[1]} in namespace {key[0]} has no ready endpoint")
        return ports[port]

    def pick(self, endpoints: list[int]) -> list[int]:
        """The endpoints in the order to try them: round robin over requests."""
        start = next(self._turn) % len(endpoints)
        return endpoints[start:] + endpoints[:start]

    @staticmethod
    def _service_of(host: str, table: EndpointTable) -> tuple[str, str]:
        labels = host.lower().rstrip(".").split(".")
        if labels[-2:] == ["cluster", "local"]:
            labels = labels[:-2]
        if len(labels) == 3 and labels[2] == "svc":
            labels = labels[:2]
        if len(labels) == 2 and (labels[1], labels[0]) in table:
            return labels[1], labels[0]
        if len(labels) == 1:
            found = [key for key in table if key[1] == labels[0]]
            if len(found) == 1:
                return found[0]
        if len(labels) in (2, 3) and host.lower().rstrip(".").endswith((".svc", ".svc.cluster.local")):
            raise LookupError(f"no service {labels[0]} in namespace {labels[1]}")
        raise NotAService(host)


class ProxyHandler(BaseHTTPRequestHandler):
    """One client connection; requests in absolute form (``GET http://host:port/path``)."""

    protocol_version = "HTTP/1.1"
    service_proxy: ServiceProxy

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.client_address[0], *args)

    def do_CONNECT(self) -> None:
        self._answer(405, "the playground's service proxy forwards plain HTTP only")

    def _forward(self) -> None:
        target = urlsplit(self.path)
        if target.scheme != "http" or not target.hostname:
            self._answer(400, f"expected an absolute http:// URL, got {self.path!r}")
            return
        body = self._request_body()
        path = (target.path or "/") + (f"?{target.query}" if target.query else "")
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
        port = target.port or 80
        try:
            addresses = [
                ("127.0.0.1", p)
                for p in self.service_proxy.pick(self.service_proxy.endpoints(target.hostname, port))
            ]
        except NotAService:
            addresses = [(target.hostname, port)]
        except LookupError as exc:
            self._answer(503, str(exc))
            return
        self._relay(addresses, path, headers, body)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _forward

    def _request_body(self) -> bytes | None:
        if self.headers.get("transfer-encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("content-length") or 0)
        return self.rfile.read(length) if length else None

    def _relay(
        self, addresses: list[tuple[str, int]], path: str, headers: dict[str, str], body: bytes | None
    ) -> None:
        last_error: Exception | None = None
        for host, port in addresses:
            connection = http.client.HTTPConnection(host, port, timeout=UPSTREAM_TIMEOUT)
            try:
                connection.request(self.command, path, body=body, headers=headers)
            except (ConnectionRefusedError, socket.gaierror) as exc:
                last_error = exc  # nothing was sent: the next endpoint may answer
                connection.close()
                continue
            except OSError as exc:
                connection.close()
                self._answer(502, f"{host}:{port}: {exc}")
                return
            try:
                response = connection.getresponse()
                payload = response.read()
            except OSError as exc:
                self._answer(502, f"{host}:{port} did not answer: {exc}")
                return
            finally:
                connection.close()
            self.send_response(response.status, response.reason)
            for key, value in response.getheaders():
                if key.lower() not in HOP_BY_HOP:
                    self.send_header(key, value)
            # a HEAD answer has no body but tells the length the GET would have
            length = response.getheader("Content-Length") if self.command == "HEAD" else None
            self.send_header("Content-Length", length or str(len(payload)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(payload)
            return
        self._answer(502, f"no endpoint answered: {last_error}")

    def _answer(self, status: int, message: str) -> None:
        payload = json.dumps({"error": message}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        with contextlib.suppress(OSError):
            self.wfile.write(payload)
