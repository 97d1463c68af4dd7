"""A graph read from a ConfigMap through the API emulator, its components resolved from Service endpoints."""

from __future__ import annotations

import time

import httpx
import pytest
from graph_testing import by_hand, ensemble, graph_route, model, rows_request, value_rows
from router_testing import SIGNING_KEY, table

from mlrollouts.local.apiserver.testing import apiserver, kubeconfig  # noqa: F401
from mlserving.router import RouteTable
from support import PYTHON, Proc, free_port, http_ok, wait_until

pytestmark = pytest.mark.integration

NS = "/api/v1/namespaces/default"
ROW = [1.0, 2.0]


def service_for(api: httpx.Client, name: str, server_url: str | None) -> str:
    """A Service ``name`` (port 80) whose only endpoint is ``server_url`` (none when None)."""
    spec = {"selector": {"app": name}, "ports": [{"name": "http", "port": 80}]}
    assert api.post(f"{NS}/services", json={"metadata": {"name": name}, "spec": spec}).status_code == 201
    subsets = []
    if server_url is not None:
        port = int(server_url.rsplit(":", 1)[1])
        subsets = [{"addresses": [{"ip": "127.0.0.1"}], "ports": [{"name": "http", "port": port}]}]
    assert (
        api.post(f"{NS}/endpoints", json={"metadata": {"name": name}, "subsets": subsets}).status_code == 201
    )
    return f"http://{name}.default.svc:80"


def test_a_graph_from_a_configmap_reaches_components_by_their_services(
    apiserver,  # noqa: F811
    kubeconfig,  # noqa: F811
    affine,
    tmp_path,
):
    api = httpx.Client(base_url=apiserver.url, timeout=10, verify=False)
    shift, double = (
        service_for(api, "shift", affine["shift"].url),
        service_for(api, "double", affine["double"].url),
    )
    ghost = service_for(api, "ghost", None)  # no ready endpoint, and no DNS name outside a cluster

    def put(document: dict) -> None:
        data = RouteTable.model_validate(document).to_configmap_data()
        current = api.get(f"{NS}/configmaps/routes").json()
        current["data"] = data
        assert api.put(f"{NS}/configmaps/routes", json=current).status_code == 200

    first = table(
        graph_route("credit", "e", model("shift", shift), model("ghost", ghost, "shift", onError="Skip"),
                    ensemble("e", ["shift", "ghost"]), model_name="credit-score"),
        graph_route("strict", "ghost", model("ghost", ghost, "shift")),
        graph_route("doubled", "double", model("double", double)),  # resolved before the change below
    )  # fmt: skip
    data = RouteTable.model_validate(first).to_configmap_data()
    assert (
        api.post(f"{NS}/configmaps", json={"metadata": {"name": "routes"}, "data": data}).status_code == 201
    )
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    argv = [PYTHON, "-m", "mlserving.cli", "route", "--configmap", "default/routes", "--kubeconfig", str(kubeconfig),
            "--port", str(port), "--host", "127.0.0.1", "--resolve-endpoints"]  # fmt: skip
    router = Proc(argv, tmp_path / "router.log", env={"MLROUTER_SIGNING_KEY": SIGNING_KEY})

    def infer(model_name: str = "credit-score") -> httpx.Response:
        return httpx.post(f"{url}/v2/models/{model_name}/infer", json=rows_request(ROW), timeout=10)

    try:
        wait_until(lambda: http_ok(f"{url}/v2/health/ready"), timeout=30, message="router ready")
        wait_until(lambda: infer().status_code == 200, timeout=10, message="shift resolved to its endpoint")
        answer = infer()
        assert value_rows(answer.json()) == [by_hand("shift", ROW)]
        assert answer.json()["parameters"]["graph"]["skipped"][0]["node"] == "ghost"
        strict = infer("strict")
        assert strict.status_code == 503 and strict.json()["node"] == "ghost", strict.text
        assert "ghost.default.svc" in strict.json()["error"]

        changed = time.monotonic()
        put(table(graph_route("credit", "e", model("shift", shift), model("double", double),
                              ensemble("e", ["shift", "double"]), model_name="credit-score")))  # fmt: skip
        both = [(s + d) / 2 for s, d in zip(by_hand("shift", ROW), by_hand("double", ROW), strict=True)]
        wait_until(lambda: value_rows(infer().json()) == [both], timeout=5, interval=0.02)
        assert time.monotonic() - changed < 1.0, router.output()
        assert "service default/double:80 resolves to ['127.0.0.1:" in router.output()
        assert router.alive()
    finally:
        router.stop()
        api.close()
