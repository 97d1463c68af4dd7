"""The shared body reader: size limit (declared and streamed), bad Content-Length, client disconnect."""

from __future__ import annotations

import pytest

from mlserving.http import ClientDisconnected, HttpError, int_header, read_body


def receiver(*messages: dict):
    pending = list(messages)

    async def receive() -> dict:
        return pending.pop(0)

    return receive


def chunk(body: bytes, more: bool) -> dict:
    return {"type": "http.request", "body": body, "more_body": more}


def scope(*headers: tuple[bytes, bytes]) -> dict:
    return {"type": "http", "headers": list(headers)}


async def test_single_message_body_is_returned_as_is():
    body = b'{"inputs": []}'
    assert await read_body(scope(), receiver(chunk(body, False)), limit=100) is body


async def test_chunks_are_joined_in_order():
    receive = receiver(chunk(b"ab", True), chunk(b"", True), chunk(b"cd", True), chunk(b"e", False))
    assert await read_body(scope(), receive, limit=5) == b"abcde"


async def test_declared_length_over_the_limit_is_refused_before_reading():
    def receive():
        raise AssertionError("the body must not be read")

    with pytest.raises(HttpError) as refused:
        await read_body(scope((b"content-length", b"101")), receive, limit=100)
    assert refused.value.status == 413
    assert "of 101 bytes exceeds the limit of 100 bytes" in refused.value.message
    assert "--max-body-bytes" in refused.value.message


@pytest.mark.parametrize(
    "messages",
    [
        (chunk(b"x" * 11, False),),  # no Content-Length, one message
        (chunk(b"x" * 6, True), chunk(b"x" * 5, False)),  # streamed past the limit
    ],
)
async def test_streamed_body_over_the_limit_is_413(messages):
    with pytest.raises(HttpError) as refused:
        await read_body(scope(), receiver(*messages), limit=10)
    assert refused.value.status == 413
    assert "exceeds the limit of 10 bytes" in refused.value.message


async def test_body_exactly_at_the_limit_is_accepted():
    receive = receiver(chunk(b"x" * 6, True), chunk(b"x" * 4, False))
    assert await read_body(scope((b"content-length", b"10")), receive, limit=10) == b"x" * 10


async def test_content_length_that_is_not_a_number_is_400():
    with pytest.raises(HttpError) as refused:
        await read_body(scope((b"content-length", b"ten")), receiver(chunk(b"", False)), limit=10)
    assert (refused.value.status, refused.value.message) == (400, "Content-Length header is not a number")


@pytest.mark.parametrize(
    "messages",
    [
        ({"type": "http.disconnect"},),
        (chunk(b"half", True), {"type": "http.disconnect"}),
    ],
)
async def test_client_leaving_before_the_body_is_complete_is_client_disconnected(messages):
    with pytest.raises(ClientDisconnected):
        await read_body(scope(), receiver(*messages), limit=100)


def test_int_header():
    headers = scope((b"x-other", b"1"), (b"inference-header-content-length", b"42"))
    assert int_header(headers, b"inference-header-content-length", "Inference-Header-Content-Length") == 42
    assert int_header(headers, b"content-length", "Content-Length") is None
    with pytest.raises(HttpError) as refused:
        int_header(scope((b"inference-header-content-length", b"4x")), b"inference-header-content-length",
                   "Inference-Header-Content-Length")  # fmt: skip
    assert refused.value.status == 400
    assert refused.value.message == "Inference-Header-Content-Length header is not a number"
