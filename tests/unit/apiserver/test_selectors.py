from __future__ import annotations

import pytest

from mlrollouts.local.apiserver.errors import ApiError
from mlrollouts.local.apiserver.selectors import lookup_field, parse_field_selector, parse_label_selector

LABELS = {"app": "web", "tier": "front", "rank": "3"}


@pytest.mark.parametrize(
    ("selector", "matches"),
    [
        ("", True),
        ("app=web", True),
        ("app==web", True),
        ("app=db", False),
        ("app!=db", True),
        ("missing!=x", True),
        ("app in (web, db)", True),
        ("app in (db)", False),
        ("app notin (db)", True),
        ("missing notin (db)", True),
        ("app", True),
        ("!app", False),
        ("!missing", True),
        ("rank>2", True),
        ("rank<3", False),
        ("app=web,tier in (front,back),!missing", True),
        ("app=web,tier=back", False),
    ],
)
def test_label_selector(selector, matches):
    assert parse_label_selector(selector)(LABELS) is matches


@pytest.mark.parametrize("selector", ["app in ()", "rank>x", "=web", "a b c"])
def test_bad_label_selector(selector):
    with pytest.raises(ApiError) as exc:
        parse_label_selector(selector)
    assert exc.value.status == 400


def test_field_selector():
    obj = {
        "metadata": {"name": "a", "namespace": "ns"},
        "involvedObject": {"uid": "u1"},
        "spec": {"on": True},
    }
    assert parse_field_selector("metadata.name=a,metadata.namespace==ns")(obj)
    assert not parse_field_selector("metadata.name!=a")(obj)
    assert parse_field_selector("involvedObject.uid=u1")(obj)
    assert lookup_field(obj, "spec.on") == "true"
    assert lookup_field(obj, "spec.none") == ""
    with pytest.raises(ApiError):
        parse_field_selector("spec.size=1", allowed=lambda f: f.startswith("metadata."))
