"""The router's fast lane (plain inference requests answered in protocol callbacks) against the same
real processes: it must answer exactly as the ASGI path does, keep HTTP/1.1's order and connection
rules, and hand everything it does not take to the ASGI path."""

from __future__ import annotations

import json
import signal
import socket
import threading
import time

import httptools
import pytest
from router_testing import route, table, variant

from mlserving.router.fastlane import fast_lane_supported

pytestmark = pytest.mark.integration

BODY = json.dumps({"inputs": [{"name": "x", "shape": [1, 1], "datatype": "FP32", "data": [1.0]}]}).encode()


def post(path: str, body: bytes = BODY, *extra: str) -> bytes:
    head = [f"POST {path} HTTP/1.1", "host: router", "content-type: application/json", *extra]
    if not any(h.lower().startswith("transfer-encoding") for h in extra):
        head.append(f"content-length: {len(body)}")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def get(path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nhost: router\r\n\r\n".encode()


class Responses:
    """The HTTP/1.1 responses read from one connection, in order."""

    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.done: list[tuple[int, dict[str, str], bytes]] = []
        self._headers: dict[str, str] = {}
        self._body = b""

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers[name.decode().lower()] = value.decode()

    def on_body(self, body: bytes) -> None:
        self._body += body

    def on_message_complete(self) -> None:
        status = self.parser.get_status_code()
        if status >= 200:  # not an interim answer (100 Continue)
            self.done.append((status, self._headers, self._body))
        self._headers, self._body = {}, b""


def exchange(port: int, data: bytes, count: int, timeout: float = 10) -> tuple[list, bool]:
    """Send ``data`` on one connection, read ``count`` responses; and whether the router then closed it."""
    responses = Responses()
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        closed = False
        while len(responses.done) < count:
            chunk = sock.recv(65536)
            if not chunk:
                closed = True
                break
            responses.parser.feed_data(chunk)
        if not closed:
            sock.settimeout(0.3)
            try:
                closed = sock.recv(1) == b""
            except TimeoutError:
                closed = False
    return responses.done, closed


@pytest.fixture(scope="module")
def lane(module_starters):
    a = module_starters.upstream("a")
    slow = module_starters.upstream("slow", "--delay", "1.0")
    router = module_starters.router(
        table(
            route(variants=[variant("a", a, weight=100)]),
            route(name="slowroute", model="slow", variants=[variant("slow", slow, weight=100)]),
        )
    )
    return router, a, slow


def port_of(router) -> int:
    return int(router.url.rsplit(":", 1)[1])


def test_the_pinned_uvicorn_has_the_hooks_the_lane_needs():
    assert fast_lane_supported()


def test_fast_and_asgi_paths_answer_alike(lane):
    router, a, _ = lane
    # The same inference request, by the fast lane and (with a query string) by the ASGI path.
    (fast, asgi), _ = exchange(
        port_of(router), post("/v2/models/iris/infer") + post("/v2/models/iris/infer?x=1"), 2
    )
    assert fast[0] == asgi[0] == 200
    assert set(fast[1]) == set(asgi[1]), (fast[1], asgi[1])
    for answer in (fast, asgi):
        headers, document = answer[1], json.loads(answer[2])
        assert headers["x-mlrollouts-variant"] == "a"
        assert headers["content-length"] == str(len(answer[2]))
        assert document["id"] == headers["x-mlrollouts-id"]
        assert document["id"].startswith("iris.a.")
    assert json.loads(asgi[2])["query"] == "x=1" and json.loads(fast[2])["query"] == ""
    assert a.stats()["last_id_header"] == json.loads(asgi[2])["id"]


def test_v1_predict_takes_the_lane_with_the_same_rewriting(lane):
    router, *_ = lane
    (answer,), _ = exchange(port_of(router), post("/v1/models/iris:predict", b'{"instances": [[1.0]]}'), 1)
    assert answer[0] == 200
    assert json.loads(answer[2])["served_by"] == "a"
    assert answer[1]["x-mlrollouts-variant"] == "a"


def test_pipelined_requests_are_answered_in_order_whatever_their_path(lane):
    router, *_ = lane
    # slow (fast lane, 1 s), health (ASGI), fast lane, a 404 (ASGI), fast lane: one write.
    data = (
        post("/v2/models/slow/infer")
        + get("/v2/health/ready")
        + post("/v2/models/iris/infer")
        + get("/v2/models/nothing-here/ready")
        + post("/v1/models/iris:predict", b'{"instances": [[1.0]]}')
    )
    answers, closed = exchange(port_of(router), data, 5)
    assert [status for status, _, _ in answers] == [200, 200, 200, 404, 200]
    assert json.loads(answers[0][2])["served_by"] == "slow"
    assert json.loads(answers[1][2]) == {"ready": True}
    assert json.loads(answers[2][2])["served_by"] == "a"
    assert "nothing-here" in json.loads(answers[3][2])["error"]
    assert json.loads(answers[4][2])["predictions"] == [0]
    assert not closed


def test_connection_close_and_http_1_0_close_after_the_answer(lane):
    router, *_ = lane
    (answer,), closed = exchange(port_of(router), post("/v2/models/iris/infer", BODY, "connection: close"), 1)
    assert answer[0] == 200 and answer[1]["connection"] == "close" and closed
    http10 = post("/v2/models/iris/infer").replace(b"HTTP/1.1", b"HTTP/1.0", 1)
    (answer,), closed = exchange(port_of(router), http10, 1)
    assert answer[0] == 200 and closed


def test_what_the_lane_does_not_take_still_works(lane):
    router, *_ = lane
    port = port_of(router)
    chunked = post(
        "/v2/models/iris/infer", b"%x\r\n%s\r\n0\r\n\r\n" % (len(BODY), BODY), "transfer-encoding: chunked"
    )
    (answer,), _ = exchange(port, chunked, 1)
    assert answer[0] == 200 and json.loads(answer[2])["served_by"] == "a"
    # expect: 100-continue gets the interim answer, then the real one
    (answer,), _ = exchange(port, post("/v2/models/iris/infer", BODY, "expect: 100-continue"), 1)
    assert answer[0] == 200
    # a body over the limit is refused with a JSON error
    (answer,), _ = exchange(port, post("/v2/models/iris/infer", b"{" + b" " * (9 * 1024 * 1024) + b"}"), 1)
    assert answer[0] == 413 and "error" in json.loads(answer[2])


def test_a_client_gone_before_its_answer_leaves_the_router_serving(lane):
    router, _, slow = lane
    port = port_of(router)
    before = slow.stats()["infer"]
    for _ in range(5):
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.sendall(post("/v2/models/slow/infer"))
    time.sleep(1.5)  # the answers arrive for nobody
    assert slow.stats()["infer"] == before + 5
    (answer,), _ = exchange(port, post("/v2/models/iris/infer"), 1)
    assert answer[0] == 200
    counted = router.metric("mlrouter_requests_total", route="slowroute", variant="slow", code="200")
    assert counted >= 5


def test_an_idle_connection_is_closed_after_the_keep_alive_timeout_and_a_busy_one_is_not(lane):
    router, *_ = lane
    port = port_of(router)
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as busy,
        socket.create_connection(("127.0.0.1", port), timeout=10) as idle,
    ):
        responses = {busy: Responses(), idle: Responses()}
        for sock in (busy, idle):
            sock.sendall(post("/v2/models/iris/infer"))
        deadline = time.monotonic() + 7.5  # uvicorn's keep-alive timeout is 5 s
        sent = 1
        while time.monotonic() < deadline:
            time.sleep(0.5)
            busy.sendall(post("/v2/models/iris/infer"))
            sent += 1
        for sock in (busy, idle):
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                responses[sock].parser.feed_data(chunk)
                if sock is busy and len(responses[sock].done) == sent:
                    break
        assert [status for status, _, _ in responses[busy].done] == [200] * sent
        assert len(responses[idle].done) == 1  # then closed: recv returned b""


def test_a_graceful_stop_answers_the_fast_request_in_flight(start_upstream, start_router):
    slow = start_upstream("slow", "--delay", "1.5")
    router = start_router(table(route(variants=[variant("slow", slow, weight=100)])))
    result: list = []
    worker = threading.Thread(
        target=lambda: result.append(exchange(port_of(router), post("/v2/models/iris/infer"), 1))
    )
    worker.start()
    deadline = time.monotonic() + 5
    while slow.stats()["infer"] == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    router.proc.popen.send_signal(signal.SIGTERM)
    worker.join(15)
    (answers, closed) = result[0]
    assert answers[0][0] == 200 and json.loads(answers[0][2])["served_by"] == "slow"
    assert answers[0][1]["connection"] == "close" and closed
    assert router.proc.popen.wait(timeout=15) in (
        0,
        -signal.SIGTERM,
    )  # uvicorn re-raises the signal it handled


def test_a_large_body_arriving_in_many_pieces_is_forwarded_whole(lane):
    router, a, _ = lane
    padding = "x" * (3 * 1024 * 1024)
    body = json.dumps(
        {"inputs": [{"name": "x", "shape": [1, 1], "datatype": "FP32", "data": [1.0]}], "pad": padding}
    )
    data = post("/v2/models/iris/infer", body.encode())
    responses = Responses()
    with socket.create_connection(("127.0.0.1", port_of(router)), timeout=10) as sock:
        for start in range(0, len(data), 256 * 1024):  # pieces the parser sees one by one
            sock.sendall(data[start : start + 256 * 1024])
            time.sleep(0.005)
        while not responses.done:
            responses.parser.feed_data(sock.recv(65536))
    status, headers, answer = responses.done[0]
    assert status == 200 and json.loads(answer)["served_by"] == "a"
    forwarded = a.stats()["last_headers"]
    # the body with the router's id appended: every byte arrived (the upstream parsed it as JSON)
    assert int(forwarded["content-length"]) == len(body) + len(',"id":""') + len(headers["x-mlrollouts-id"])
