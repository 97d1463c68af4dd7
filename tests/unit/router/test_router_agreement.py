"""Shadow agreement: labels must be equal, floating outputs within a relative tolerance."""

from __future__ import annotations

import orjson
import pytest

from mlserving.router.agreement import predictions_agree


def v2(**outputs):
    return orjson.dumps(
        {
            "outputs": [
                {"name": n, "datatype": dt, "shape": [len(d)], "data": d} for n, (dt, d) in outputs.items()
            ]
        }
    )


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        (v2(label=("INT64", [1, 2])), v2(label=("INT64", [1, 2])), True),
        (v2(label=("INT64", [1, 2])), v2(label=("INT64", [1, 3])), False),
        (v2(label=("BYTES", ["cat"])), v2(label=("BYTES", ["dog"])), False),
        (v2(y=("FP32", [100.0])), v2(y=("FP32", [100.05])), True),
        (v2(y=("FP32", [100.0])), v2(y=("FP32", [101.0])), False),
        (v2(y=("FP64", [1.0, 2.0])), v2(y=("FP64", [1.0])), False),
        (v2(y=("FP64", [1.0])), v2(z=("FP64", [1.0])), False),
        (b'{"predictions": [[0.5, 1.5]]}', b'{"predictions": [[0.5001, 1.5]]}', True),
        (b'{"predictions": [1, 0]}', b'{"predictions": [1, 1]}', False),
        (b'{"predictions": [1]}', b"not json", None),
        (b'{"predictions": [1]}', v2(label=("INT64", [1])), None),
        (b"[1]", b"[1]", None),
    ],
)
def test_agreement(a, b, expected):
    assert predictions_agree(a, b, rel_tol=1e-3) is expected
