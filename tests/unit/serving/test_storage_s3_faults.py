"""S3 model downloads that stall or trickle end with an error naming the URI and the cause, within
the stall timeout or the download deadline.

The source is a real HTTP server on loopback speaking just enough of the S3 REST API for a download
(``ListObjectsV2`` of an empty prefix, ``HeadObject``, ``GetObject``), whose object bodies stall or
trickle.
"""

from __future__ import annotations

import contextlib
import http.server
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from mlserving.storage import FetchError, fetch_model

# Without a deadline these downloads would last for minutes or for ever.
pytestmark = pytest.mark.timeout(30)

SIZE = 1000
EMPTY_LISTING = (
    '<?xml version="1.0" encoding="UTF-8"?>'
    '<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
    "<Name>models</Name><Prefix>{prefix}</Prefix><KeyCount>0</KeyCount><MaxKeys>1000</MaxKeys>"
    "<Delimiter>/</Delimiter><IsTruncated>false</IsTruncated></ListBucketResult>"
)


class S3Handler(http.server.BaseHTTPRequestHandler):
    """One object, ``models/m.onnx`` of ``SIZE`` bytes, whose body is sent as ``mode`` says:
    ``complete``, ``stall`` (headers, then nothing) or ``trickle`` (a byte now and then)."""

    protocol_version = "HTTP/1.1"
    mode = "complete"
    release = threading.Event()
    gets = 0

    def _object_headers(self, status: int = 200) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(SIZE))
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("ETag", '"0123456789abcdef0123456789abcdef"')
        self.send_header("Last-Modified", "Mon, 01 Jan 2024 00:00:00 GMT")
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()

    def do_HEAD(self) -> None:
        if urlsplit(self.path).path == "/models/m.onnx":
            self._object_headers()
        else:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        if url.path in ("/models", "/models/"):
            prefix = parse_qs(url.query).get("prefix", [""])[0]
            body = EMPTY_LISTING.format(prefix=prefix).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/xml")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        type(self).gets += 1
        self._object_headers()
        if self.mode == "complete":
            self.wfile.write(b"x" * SIZE)
            return
        self.wfile.flush()
        sent = 0
        while self.mode == "trickle" and sent < SIZE - 1 and not self.release.wait(0.05):
            self.wfile.write(b"x")  # a byte now and then: never a stall, never done
            self.wfile.flush()
            sent += 1
        self.release.wait(30)

    def log_message(self, *_: object) -> None:
        pass


@contextlib.contextmanager
def s3_source(mode: str) -> Iterator[tuple[str, type[S3Handler]]]:
    handler: type[S3Handler] = type(
        "ModeS3Handler", (S3Handler,), {"mode": mode, "release": threading.Event(), "gets": 0}
    )
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler
    finally:
        handler.release.set()
        server.shutdown()
        server.server_close()


@pytest.fixture(autouse=True)
def s3_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)


def test_the_s3_emulation_serves_a_complete_download(tmp_path: Path) -> None:
    with s3_source("complete") as (endpoint, _):
        path = fetch_model("s3://models/m.onnx", download_dir=tmp_path, s3_endpoint_url=endpoint, timeout=5)
    assert path.read_bytes() == b"x" * SIZE


def test_a_trickling_s3_download_ends_at_the_deadline(tmp_path: Path) -> None:
    started = time.monotonic()
    with s3_source("trickle") as (endpoint, _), pytest.raises(FetchError) as caught:
        fetch_model(
            "s3://models/m.onnx", download_dir=tmp_path, s3_endpoint_url=endpoint, timeout=5, deadline=1
        )
    assert str(caught.value) == "s3://models/m.onnx: download not complete after 1s"
    assert time.monotonic() - started < 4
    assert list(tmp_path.iterdir()) == [], "the partial file is removed"


def test_a_stalled_s3_download_ends_at_the_deadline_whatever_the_retries(tmp_path: Path) -> None:
    started = time.monotonic()
    with s3_source("stall") as (endpoint, handler), pytest.raises(FetchError) as caught:
        fetch_model(
            "s3://models/m.onnx", download_dir=tmp_path, s3_endpoint_url=endpoint, timeout=0.5, deadline=2
        )
    assert str(caught.value) == "s3://models/m.onnx: download not complete after 2s"
    assert handler.gets >= 2, "the client retried the stalled read"
    assert time.monotonic() - started < 4
    assert list(tmp_path.iterdir()) == []


def test_a_stalled_s3_download_ends_after_the_timeout_and_the_retries(tmp_path: Path) -> None:
    started = time.monotonic()
    with s3_source("stall") as (endpoint, _), pytest.raises(FetchError) as caught:
        fetch_model(
            "s3://models/m.onnx", download_dir=tmp_path, s3_endpoint_url=endpoint, timeout=0.5, deadline=60
        )
    assert str(caught.value).startswith("s3://models/m.onnx: no answer for 0.5s ("), str(caught.value)
    # each attempt waits 0.5s for the next bytes; the client gives up after a few
    assert time.monotonic() - started < 10
    assert list(tmp_path.iterdir()) == []
