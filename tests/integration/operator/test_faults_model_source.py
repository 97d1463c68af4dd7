"""A new model version whose download fails or stalls, on the playground with real processes.

The model server of the candidate revision fetches its model from a small HTTP server of the test:
one that answers 500, one that sends the headers and then nothing. The server ends with a report
(``ModelFetchFailed``) that the kubelet keeps as the container's termination message, the kubelet
restarts it with back-off, the operator reads the report from the pods and says it while it waits,
and at the progress deadline it rolls the candidate back naming the URL and what went wrong. The
stable revision serves every request through the router all along, and the route table never gives
the candidate any weight.
"""

from __future__ import annotations

import contextlib
import http.server
import threading
from collections.abc import Iterator

import pytest
from playground_faults import FaultRun, World, assert_rolled_back, canary, condition, fault_playground
from rollout_support import revision_of, with_model

pytestmark = [pytest.mark.integration, pytest.mark.faults]

FETCH_TIMEOUT = 1.5
"""Seconds the model server waits for a stalled download (``MLSERVING_FETCH_TIMEOUT_SECONDS``)."""


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Iterator[World]:
    with fault_playground(tmp_path_factory.mktemp("model-source")) as world:
        yield world


class ModelSource(http.server.ThreadingHTTPServer):
    """An HTTP server that fails model downloads: ``mode`` "error" answers 500, "stall" sends the
    headers of a large body and then nothing until the server closes."""

    daemon_threads = True

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.closing = threading.Event()
        self.requests = 0
        super().__init__(("127.0.0.1", 0), SourceHandler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/models/iris-v2.onnx"


class SourceHandler(http.server.BaseHTTPRequestHandler):
    server: ModelSource

    def do_GET(self) -> None:
        self.server.requests += 1
        if self.server.mode == "error":
            body = b"storage backend unavailable"
            self.send_response(500)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(10**7))
        self.end_headers()
        self.wfile.flush()
        self.server.closing.wait(120)

    def log_message(self, *_: object) -> None:
        pass


@contextlib.contextmanager
def model_source(mode: str) -> Iterator[ModelSource]:
    server = ModelSource(mode)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.closing.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.mark.parametrize(
    ("mode", "serving", "why"),
    [
        ("error", {}, "HTTP 500 Internal Server Error"),
        (
            "stall",
            {"env": [{"name": "MLSERVING_FETCH_TIMEOUT_SECONDS", "value": str(FETCH_TIMEOUT)}]},
            f"no answer for {FETCH_TIMEOUT:g}s (ReadTimeout)",
        ),
    ],
    ids=["http-500", "stalled-body"],
)
def test_failed_model_download_rolls_back_naming_url_and_cause(world: World, mode, serving, why):
    with model_source(mode) as source:
        base = canary("fetch", world.models.classifier_onnx.as_uri(), **serving)
        stable, candidate = revision_of(base), revision_of(with_model(base, source.url))
        with FaultRun.of(world, base) as run:
            run.wait(lambda s: s.get("phase") == "Healthy", 60, "v1 Healthy")
            run.start()
            run.patch_model(source.url)
            # while it waits, the status already says why the candidate is not ready
            waiting = run.wait(
                lambda s: condition(s, "CandidateReady").get("reason") == "ModelFetchFailed",
                20,
                "the fetch failure reported while waiting",
            )
            assert waiting["phase"] == "Progressing", waiting
            ready = condition(waiting, "CandidateReady")
            assert ready["status"] == "False" and source.url in ready["message"], ready
            assert source.url in waiting["message"] and why in waiting["message"], waiting["message"]

            assert_rolled_back(run, stable, candidate, "ModelFetchFailed", f"fetch failed: {source.url}", why)
            assert run.answers() >= 20, "traffic went through the router during the rollout"
            run.stop()
            run.assert_stable_served_everything(stable, candidate)
        assert source.requests >= 2, "the kubelet's restarts tried the download again"
