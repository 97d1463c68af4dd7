"""Prediction bins, response ids, compilation checks and settings."""

from __future__ import annotations

import numpy as np
import pytest

from mlserving.runtimes import LoadOptions, compile_estimator
from mlserving.server.ids import ResponseIds
from mlserving.server.metrics import ServerMetrics, value_buckets
from mlserving.settings import ServerSettings


def test_value_buckets_are_fixed_and_symmetric():
    values = np.array(
        [0.0, 0.0004, 0.001, 0.0015, 0.002, 1.0, 1.99, 2.0, 4.99, 5.0, 152.3, -152.3, 3e9, np.nan]
    )
    assert value_buckets(values) == [
        "0", "0", "0.001", "0.001", "0.002", "1", "1", "2", "2", "5", "100", "-100", "1e+09", "nan",
    ]  # fmt: skip


def test_prediction_buckets_are_bounded():
    metrics = ServerMetrics("m", "r")
    metrics.observe_predictions("label", np.arange(500))
    series = {
        s.labels["bucket"] for s in metrics.predictions.collect()[0].samples if s.name.endswith("_total")
    }
    assert "other" in series and len(series) == 201


def test_ids_cache_and_signature():
    signed = ResponseIds("secret-key-of-some-length", cache_size=2)
    other_replica = ResponseIds("secret-key-of-some-length", cache_size=2)
    stranger = ResponseIds("another-key-entirely-xxxxxx", cache_size=2)
    rid = signed.new()
    assert other_replica.lookup(rid) == (True, None)
    assert stranger.lookup(rid)[0] is False
    unsigned = ResponseIds(None, cache_size=2)
    for name in ("a", "b", "c"):
        unsigned.remember(name, [1])
    assert unsigned.lookup("a") == (False, None)  # evicted
    assert unsigned.lookup("c") == (True, [1])


def test_compiled_model_that_differs_is_rejected():
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    x, y = load_iris(return_X_y=True)
    model = LogisticRegression(max_iter=300).fit(x, y)
    ok = compile_estimator(model, LoadOptions(compile_tolerance=1e-4))
    assert ok.onnx_bytes is not None and ok.reason is None
    # float32 ONNX cannot match float64 scikit-learn to 1e-12: the server must fall back.
    strict = compile_estimator(model, LoadOptions(compile_tolerance=1e-12))
    assert strict.onnx_bytes is None and "probabilities differ" in (strict.reason or "")


def test_settings_from_environment_and_overrides(monkeypatch):
    monkeypatch.setenv("MLSERVING_MODEL_NAME", "iris")
    monkeypatch.setenv("MLSERVING_MODEL_URI", "s3://b/k")
    monkeypatch.setenv("MLSERVING_REVISION", "abc123")
    monkeypatch.setenv("MLSERVING_MAX_BATCH_SIZE", "8")
    s = ServerSettings(port=9000)
    assert (s.model_name, s.revision, s.max_batch_size, s.port, s.metric_model) == (
        "iris",
        "abc123",
        8,
        9000,
        "iris",
    )
    with pytest.raises(ValueError, match="model_sha256"):
        ServerSettings(model_sha256="xyz")


def test_router_ids_are_accepted_with_the_routers_key():
    from mlserving.router.ids import IdSigner

    key = "the-router-signing-key-0123456789"
    router_id = IdSigner(key.encode()).issue("iris", "canary", now=1_700_000_000)
    assert ResponseIds(key, cache_size=10).lookup(router_id) == (True, None)
    assert ResponseIds("a-different-key-0123456789abcdef", cache_size=10).lookup(router_id)[0] is False
    assert ResponseIds(key, cache_size=10).lookup(router_id[:-3] + "xyz")[0] is False
