"""scikit-learn models: skops (safe) vs. refused pickle, ONNX compilation and its native fallback."""

from __future__ import annotations

import numpy as np
import pytest
import skops.io as sio

from support import http_ok, wait_until
from support.models import TREE_TYPE, metric_value, serving

pytestmark = pytest.mark.integration


def test_skops_classifier_is_compiled_and_matches_sklearn(skops_server, iris, client):
    meta = client.get(f"{skops_server.url}/v2/models/iris").json()
    assert meta["platform"] == "sklearn_onnx"
    assert meta["properties"]["compiled_from"] == iris.classifier_skops.name
    resp = client.post(
        f"{skops_server.url}/v2/models/iris/infer", json=skops_server.infer_body(iris.features)
    )
    outputs = {o["name"]: o for o in resp.json()["outputs"]}
    estimator = sio.load(iris.classifier_skops)
    assert outputs["label"]["data"] == estimator.predict(iris.features).tolist()
    proba = np.array(outputs["probabilities"]["data"]).reshape(outputs["probabilities"]["shape"])
    np.testing.assert_allclose(proba, estimator.predict_proba(iris.features), atol=1e-5)


def test_pickle_is_refused_by_default_and_says_why(iris, tmp_path, client):
    with serving(tmp_path, iris.classifier_joblib, name="iris", wait="live") as server:
        wait_until(
            lambda: "refusing" in client.get(f"{server.url}/v2/health/ready").text, message="load refusal"
        )
        ready = client.get(f"{server.url}/v2/health/ready")
        assert ready.status_code == 503
        assert "--allow-unsafe-pickle" in ready.json()["error"] and "arbitrary code" in ready.json()["error"]
        assert client.get(f"{server.url}/v2/health/live").status_code == 200
        infer = client.post(f"{server.url}/v2/models/iris/infer", json=server.infer_body(iris.features[:1]))
        assert infer.status_code == 503 and "failed to load" in infer.json()["error"]
        metrics = client.get(f"{server.url}/metrics").text
        assert metric_value(metrics, "mlserving_model_load_failures_total", model="iris") == 1.0
        assert metric_value(metrics, "mlserving_model_ready", model="iris") == 0.0
        assert "refusing to load a joblib/pickle file" in server.proc.output()


def test_pickle_loads_when_explicitly_allowed(iris, tmp_path, compile_cache, client):
    extra = ["--allow-unsafe-pickle", "--compile-cache-dir", str(compile_cache)]
    with serving(tmp_path, iris.classifier_joblib, name="iris", extra=extra) as server:
        resp = client.post(f"{server.url}/v2/models/iris/infer", json=server.infer_body(iris.features))
        assert resp.json()["outputs"][0]["data"] == iris.labels.tolist()


def test_untrusted_skops_types_are_refused_then_trusted_explicitly(iris, tmp_path, compile_cache, client):
    with serving(tmp_path, iris.forest_skops, name="forest", wait="live") as server:
        wait_until(
            lambda: "not trusted" in client.get(f"{server.url}/v2/health/ready").text, message="refusal"
        )
        error = client.get(f"{server.url}/v2/health/ready").json()["error"]
        assert TREE_TYPE in error and f"--trust-type {TREE_TYPE}" in error
    extra = ["--trust-type", TREE_TYPE, "--compile-cache-dir", str(compile_cache)]
    with serving(tmp_path, iris.forest_skops, name="forest", extra=extra) as server:
        resp = client.post(f"{server.url}/v2/models/forest/infer", json=server.infer_body(iris.features))
        assert resp.json()["outputs"][0]["data"] == iris.labels.tolist()
        assert client.get(f"{server.url}/v2/models/forest").json()["platform"] == "sklearn_onnx"


def test_model_without_onnx_converter_is_served_natively(iris, tmp_path, client):
    with serving(tmp_path, iris.native_regressor_skops, name="kr") as server:
        meta = client.get(f"{server.url}/v2/models/kr").json()
        assert meta["platform"] == "sklearn"
        assert meta["outputs"] == [{"name": "value", "datatype": "FP64", "shape": [-1]}]
        assert "no ONNX conversion" in meta["properties"]["native_fallback"]
        rows = np.linspace(-0.05, 0.05, 20).reshape(2, 10)
        resp = client.post(f"{server.url}/v2/models/kr/infer", json=server.infer_body(rows))
        expected = sio.load(iris.native_regressor_skops).predict(rows)
        np.testing.assert_allclose(resp.json()["outputs"][0]["data"], expected, rtol=1e-9)
        metrics = client.get(f"{server.url}/metrics").text
        assert metric_value(metrics, "mlserving_native_fallback_total", reason="unsupported") == 1.0
        assert "serving KernelRidge natively" in server.proc.output()


def test_fetch_failure_leaves_server_live_not_ready(tmp_path, client):
    with serving(tmp_path, tmp_path / "missing.onnx", name="m", wait="live") as server:
        wait_until(lambda: "failed" in client.get(f"{server.url}/v2/health/ready").text, message="failure")
        assert client.get(f"{server.url}/v2/models/m/ready").status_code == 503
        assert "no such file" in client.get(f"{server.url}/v2/health/ready").json()["error"]
        assert http_ok(f"{server.url}/v2/health/live")
        metrics = client.get(f"{server.url}/metrics").text
        assert metric_value(metrics, "mlserving_model_load_failures_total", model="m") == 1.0
