"""With --resolve-endpoints the router sends a Service upstream's traffic to the Service's ready endpoints."""

from __future__ import annotations

import httpx
import pytest
import yaml
from router_testing import SIGNING_KEY, route, table, variant

from mlrollouts.local.apiserver.testing import apiserver, kubeconfig  # noqa: F401
from mlserving.router import ROUTES_CONFIGMAP_KEY
from support import PYTHON, Proc, free_port, http_ok, wait_until

pytestmark = pytest.mark.integration

INFER = {"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1.0]}]}
NS = "/api/v1/namespaces/default"


def endpoints_of(*upstreams) -> dict:
    subsets = []
    for upstream in upstreams:
        port = int(upstream.url.rsplit(":", 1)[1])
        subsets.append({"addresses": [{"ip": "127.0.0.1"}], "ports": [{"name": "http", "port": port}]})
    return {"metadata": {"name": "iris-v1"}, "subsets": subsets}


def test_service_upstream_follows_its_endpoints(apiserver, kubeconfig, start_upstream, tmp_path):  # noqa: F811
    a, b = start_upstream("a"), start_upstream("b")
    api = httpx.Client(base_url=apiserver.url, timeout=10, verify=False)
    service = {
        "metadata": {"name": "iris-v1"},
        "spec": {"selector": {"app": "iris"}, "ports": [{"name": "http", "port": 80}]},
    }
    assert api.post(f"{NS}/services", json=service).status_code == 201
    assert api.post(f"{NS}/endpoints", json=endpoints_of(a)).status_code == 201
    routes = table(route(variants=[variant("stable", "http://iris-v1.default.svc:80", weight=1)]))
    assert (
        api.post(
            f"{NS}/configmaps",
            json={"metadata": {"name": "routes"}, "data": {ROUTES_CONFIGMAP_KEY: yaml.safe_dump(routes)}},
        ).status_code
        == 201
    )
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    argv = [PYTHON, "-m", "mlserving.cli", "route", "--configmap", "default/routes", "--kubeconfig", str(kubeconfig),
            "--port", str(port), "--host", "127.0.0.1", "--resolve-endpoints"]  # fmt: skip
    router = Proc(argv, tmp_path / "router.log", env={"MLROUTER_SIGNING_KEY": SIGNING_KEY})

    def served() -> int:
        return httpx.post(f"{url}/v2/models/iris/infer", json=INFER, timeout=10).status_code

    try:
        wait_until(lambda: http_ok(f"{url}/v2/health/ready"), timeout=30, message="router ready")
        wait_until(lambda: served() == 200, timeout=10, message="served through the endpoint")
        before_a = a.stats()["infer"]
        for _ in range(5):
            assert served() == 200
        assert a.stats()["infer"] - before_a >= 5

        # the Service now has two ready endpoints: both get traffic
        current = api.get(f"{NS}/endpoints/iris-v1").json()
        current["subsets"] = endpoints_of(a, b)["subsets"]
        assert api.put(f"{NS}/endpoints/iris-v1", json=current).status_code == 200
        before_b = b.stats()["infer"]
        wait_until(
            lambda: served() == 200 and b.stats()["infer"] > before_b,
            timeout=10,
            message="second endpoint used",
        )

        # only b is left: a gets nothing more
        current = api.get(f"{NS}/endpoints/iris-v1").json()
        current["subsets"] = endpoints_of(b)["subsets"]
        assert api.put(f"{NS}/endpoints/iris-v1", json=current).status_code == 200
        wait_until(
            lambda: (
                "resolves to ['127.0.0.1:" in router.output() and router.output().count("resolves to") >= 3
            ),
            timeout=10,
            message="third resolution logged",
        )
        before_a = a.stats()["infer"]
        for _ in range(10):
            assert served() == 200
        assert a.stats()["infer"] == before_a
    finally:
        router.stop()
