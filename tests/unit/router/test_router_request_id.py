"""The router's id is added to JSON request objects without parsing them; other bodies pass through."""

from __future__ import annotations

import orjson
import pytest

from mlserving.router.app import _with_request_id
from mlserving.router.headers import end_to_end_headers

ID = "iris.stable.1700000000.0123456789ab.c2lnbmF0dXJl"


@pytest.mark.parametrize(
    "body",
    [
        b"{}",
        b" {\n} ",
        b'{"inputs": [1, 2]}',
        b'{"id": "client-id", "inputs": []}\n',
        b'{"a": {"id": "inner"}}',
    ],
)
def test_json_objects_get_the_router_id(body):
    assert orjson.loads(_with_request_id(body, ID))["id"] == ID
    rest = {k: v for k, v in orjson.loads(_with_request_id(body, ID)).items() if k != "id"}
    assert rest == {k: v for k, v in orjson.loads(body).items() if k != "id"}


@pytest.mark.parametrize("body", [b"", b"[1, 2]", b"not json", b'"text"'])
def test_other_bodies_are_untouched(body):
    assert _with_request_id(body, ID) == body


def test_hop_by_hop_headers_are_dropped():
    headers = [
        (b"connection", b"keep-alive, x-private"),
        (b"x-private", b"1"),
        (b"keep-alive", b"timeout=5"),
        (b"transfer-encoding", b"chunked"),
        (b"host", b"router"),
        (b"content-length", b"12"),
        (b"expect", b"100-continue"),
        (b"x-user-id", b"alice"),
        (b"Content-Type", b"application/json"),
    ]
    assert end_to_end_headers(headers) == [(b"x-user-id", b"alice"), (b"Content-Type", b"application/json")]
