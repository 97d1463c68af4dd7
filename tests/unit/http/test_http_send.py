"""Responses: head and body with content-length, JSON by default; errors as {"error": ...}; 405."""

from __future__ import annotations

import orjson
import pytest

from mlserving.http import JSON_HEADERS, HttpError, require_method, send_body, send_error, send_json


class Recorder:
    def __init__(self) -> None:
        self.messages: list[dict] = []

    async def __call__(self, message: dict) -> None:
        self.messages.append(message)

    @property
    def status(self) -> int:
        return self.messages[0]["status"]

    @property
    def headers(self) -> list[tuple[bytes, bytes]]:
        return self.messages[0]["headers"]

    @property
    def body(self) -> bytes:
        return self.messages[1]["body"]


async def test_send_body_is_json_with_content_length_by_default():
    send = Recorder()
    await send_body(send, 200, b'{"live":true}')
    assert [m["type"] for m in send.messages] == ["http.response.start", "http.response.body"]
    assert send.status == 200
    assert send.headers == [(b"content-type", b"application/json"), (b"content-length", b"13")]
    assert send.body == b'{"live":true}'


async def test_send_body_with_its_own_headers_keeps_their_order():
    send = Recorder()
    headers = [(b"content-type", b"text/plain"), (b"x-mlrollouts-variant", b"canary")]
    await send_body(send, 201, b"hello", headers)
    assert send.headers == [*headers, (b"content-length", b"5")]
    assert headers == [(b"content-type", b"text/plain"), (b"x-mlrollouts-variant", b"canary")]


async def test_send_json_serializes_the_document():
    send = Recorder()
    await send_json(send, 503, {"ready": False, "error": "model 'iris' is loading"})
    assert send.status == 503
    assert orjson.loads(send.body) == {"ready": False, "error": "model 'iris' is loading"}
    assert send.headers[0] == JSON_HEADERS[0]


async def test_send_error_answers_status_and_error_body_with_all_headers():
    send = Recorder()
    error = HttpError(405, "GET is not allowed", ((b"allow", b"POST"),))
    await send_error(send, error, ((b"x-mlrollouts-variant", b"stable"),))
    assert send.status == 405
    assert orjson.loads(send.body) == {"error": "GET is not allowed"}
    assert send.headers == [
        (b"content-type", b"application/json"),
        (b"allow", b"POST"),
        (b"x-mlrollouts-variant", b"stable"),
        (b"content-length", str(len(send.body)).encode()),
    ]


@pytest.mark.parametrize(("method", "allowed"), [("GET", "GET"), ("HEAD", "GET"), ("POST", "POST")])
def test_allowed_methods_pass(method, allowed):
    require_method(method, allowed, "/v2")


@pytest.mark.parametrize(
    ("method", "allowed", "allow"),
    [("POST", "GET", b"GET, HEAD"), ("GET", "POST", b"POST"), ("HEAD", "POST", b"POST")],
)
def test_other_methods_are_405_with_allow(method, allowed, allow):
    with pytest.raises(HttpError) as refused:
        require_method(method, allowed, "/v2/models/iris/infer")
    assert refused.value.status == 405
    assert refused.value.message == f"{method} is not allowed on /v2/models/iris/infer; use {allowed}"
    assert refused.value.headers == ((b"allow", allow),)
