"""HTTP model downloads that fail, stall or trickle end with an error naming the URL and the cause,
within the stall timeout or the download deadline; a server asked to exit on it reports it."""

from __future__ import annotations

import contextlib
import http.server
import json
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mlserving.runtimes.refusals import EXIT_ENV, FETCH_FAILED_EXIT_CODE, MODEL_FETCH_FAILED
from mlserving.storage import FetchError, fetch_model


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    mode = "error"
    release = threading.Event()

    def do_GET(self) -> None:
        if self.mode == "error":
            self.send_response(500)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Length", "1000")
        self.end_headers()
        self.wfile.flush()
        while self.mode == "trickle" and not self.release.wait(0.05):
            self.wfile.write(b"x")  # a byte now and then: never a stall, never done
            self.wfile.flush()
        self.release.wait(10)

    def log_message(self, *_: object) -> None:
        pass


@contextlib.contextmanager
def source(mode: str) -> Iterator[str]:
    handler = type("ModeHandler", (Handler,), {"mode": mode, "release": threading.Event()})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/m.onnx"
    finally:
        handler.release.set()
        server.shutdown()
        server.server_close()


@contextlib.contextmanager
def silent_source() -> Iterator[str]:
    """Accepts connections and never answers."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/m.onnx"


def test_an_error_status_names_the_url_and_the_status(tmp_path: Path) -> None:
    with source("error") as url, pytest.raises(FetchError) as caught:
        fetch_model(url, download_dir=tmp_path)
    assert str(caught.value) == f"{url}: HTTP 500 Internal Server Error"


@pytest.mark.parametrize("stall", ["no answer", "headers then nothing"])
def test_a_stalled_download_ends_after_the_timeout(tmp_path: Path, stall: str) -> None:
    started = time.monotonic()
    with contextlib.ExitStack() as stack:
        url = stack.enter_context(silent_source() if stall == "no answer" else source("stall"))
        with pytest.raises(FetchError) as caught:
            fetch_model(url, download_dir=tmp_path, timeout=0.5)
    assert str(caught.value) == f"{url}: no answer for 0.5s (ReadTimeout)"
    assert time.monotonic() - started < 5
    assert list(tmp_path.iterdir()) == []


def test_a_trickling_download_ends_at_the_deadline(tmp_path: Path) -> None:
    with source("trickle") as url, pytest.raises(FetchError) as caught:
        fetch_model(url, download_dir=tmp_path, timeout=5, deadline=1)
    assert str(caught.value).startswith(f"{url}: download not complete after 1s (")
    assert list(tmp_path.iterdir()) == [], "the partial file is removed"


def test_a_server_asked_to_exit_on_a_failed_fetch_reports_it(tmp_path: Path) -> None:
    termination_log = tmp_path / "termination-log"
    termination_log.touch()
    script = textwrap.dedent(
        f"""
        from pathlib import Path
        from mlserving.runtimes.refusals import exit_if_refused_for_good
        from mlserving.storage import FetchError
        exit_if_refused_for_good(FetchError("fetch failed: http://m/x.onnx: HTTP 503"), path=Path({str(termination_log)!r}))
        print("still running")
        """
    )
    asked = subprocess.run(
        [sys.executable, "-c", script], env={EXIT_ENV: "true"}, capture_output=True, text=True
    )
    assert asked.returncode == FETCH_FAILED_EXIT_CODE, asked.stderr
    report = json.loads(termination_log.read_text())
    assert report == {"reason": MODEL_FETCH_FAILED, "message": "fetch failed: http://m/x.onnx: HTTP 503"}
    assert json.loads(asked.stderr.strip().splitlines()[-1]) == report
    not_asked = subprocess.run([sys.executable, "-c", script], env={}, capture_output=True, text=True)
    assert (not_asked.returncode, not_asked.stdout.strip()) == (0, "still running")
