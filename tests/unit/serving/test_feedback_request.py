"""The feedback request shared by the model server and the router: one validation, fields named."""

from __future__ import annotations

import orjson
import pytest

from mlserving.feedback import MAX_ID_LENGTH, Feedback, parse_feedback
from mlserving.http import HttpError


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        ({"id": "r1", "reward": 1}, Feedback("r1", 1)),
        ({"id": "r1", "reward": -2.5}, Feedback("r1", -2.5)),
        ({"id": "r1", "label": "setosa"}, Feedback("r1", None, "setosa", True)),
        ({"id": "r1", "label": None}, Feedback("r1", None, None, True)),
        ({"id": "r1", "reward": 0, "label": [1, 2]}, Feedback("r1", 0, [1, 2], True)),
    ],
)
def test_valid_feedback(document, expected):
    assert parse_feedback(orjson.dumps(document)) == expected


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b"{not json", "malformed JSON"),
        (b"[1, 2]", "must be a JSON object"),
        (b'{"reward": 1}', "'id'"),
        (b'{"id": "", "reward": 1}', "'id'"),
        (b'{"id": 7, "reward": 1}', "'id'"),
        (orjson.dumps({"id": "x" * (MAX_ID_LENGTH + 1), "reward": 1}), "'id'"),
        (b'{"id": "r1"}', "'reward' (a number) and/or 'label'"),
        (b'{"id": "r1", "reward": "high"}', "'reward' must be a finite number"),
        (b'{"id": "r1", "reward": true}', "'reward' must be a finite number"),
        (b'{"id": "r1", "reward": null}', "'reward' must be a finite number"),
        (b'{"id": "r1", "reward": 1e200}', "its square must be a finite number"),
    ],
)
def test_invalid_feedback_is_400_naming_the_field(body, fragment):
    with pytest.raises(HttpError) as refused:
        parse_feedback(body)
    assert refused.value.status == 400
    assert fragment in refused.value.message
