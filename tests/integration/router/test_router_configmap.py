"""Hot reload of the route table from a ConfigMap watched through the API emulator over HTTP."""

from __future__ import annotations

import time

import httpx
import pytest
import yaml
from router_testing import SIGNING_KEY, route, table, variant

from mlrollouts.local.apiserver.testing import apiserver, kubeconfig  # noqa: F401
from mlserving.router import ROUTES_CONFIGMAP_KEY, RouteTable
from support import PYTHON, Proc, free_port, http_ok, wait_until

pytestmark = pytest.mark.integration

CONFIGMAPS = "/api/v1/namespaces/default/configmaps"
INFER = {"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1.0]}]}


def served_by(url: str) -> str:
    return httpx.post(f"{url}/v2/models/iris/infer", json=INFER, timeout=10).headers["x-mlrollouts-variant"]


def test_configmap_changes_apply_within_a_second(apiserver, kubeconfig, start_upstream, tmp_path):  # noqa: F811
    a, b = start_upstream("a"), start_upstream("b")
    api = httpx.Client(base_url=apiserver.url, timeout=10, verify=False)

    def put(document: dict | str) -> None:
        text = document if isinstance(document, str) else RouteTable.model_validate(document).to_yaml()
        current = api.get(f"{CONFIGMAPS}/routes").json()
        current["data"] = {ROUTES_CONFIGMAP_KEY: text}
        assert api.put(f"{CONFIGMAPS}/routes", json=current).status_code == 200

    first = table(route(variants=[variant("a", a, weight=1)]))
    created = api.post(
        CONFIGMAPS,
        json={"metadata": {"name": "routes"}, "data": {ROUTES_CONFIGMAP_KEY: yaml.safe_dump(first)}},
    )
    assert created.status_code == 201, created.text
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    argv = [PYTHON, "-m", "mlserving.cli", "route", "--configmap", "default/routes", "--kubeconfig", str(kubeconfig),
            "--port", str(port), "--host", "127.0.0.1"]  # fmt: skip
    router = Proc(argv, tmp_path / "router.log", env={"MLROUTER_SIGNING_KEY": SIGNING_KEY})
    try:
        wait_until(lambda: http_ok(f"{url}/v2/health/ready"), timeout=30, message="router ready")
        assert served_by(url) == "a"

        changed = time.monotonic()
        put(table(route(variants=[variant("b", b, weight=1)])))
        wait_until(lambda: served_by(url) == "b", timeout=5, interval=0.02)
        assert time.monotonic() - changed < 1.0, router.output()

        put("routes: [{name: r, model: iris, variants: [{name: c, upstreams: ['http://x'], weight: -1}]}]")
        wait_until(
            lambda: "routes.0.variants.0.weight" in router.output(), timeout=5, message="rejection logged"
        )
        assert served_by(url) == "b"  # the last good table stays

        # The watch resumes after the emulator drops it: stop and start the stream by deleting and re-creating.
        assert api.delete(f"{CONFIGMAPS}/routes").status_code == 200
        wait_until(lambda: "was deleted" in router.output(), timeout=5, message="deletion noticed")
        assert served_by(url) == "b"
        again = table(route(variants=[variant("a", a, weight=1)]))
        api.post(
            CONFIGMAPS,
            json={"metadata": {"name": "routes"}, "data": {ROUTES_CONFIGMAP_KEY: yaml.safe_dump(again)}},
        )
        wait_until(lambda: served_by(url) == "a", timeout=5, interval=0.02)
        assert router.alive()
    finally:
        router.stop()
        api.close()


def test_expired_resource_version_lists_again(apiserver, kubeconfig, start_upstream, tmp_path):  # noqa: F811
    a, b = start_upstream("a"), start_upstream("b")
    api = httpx.Client(base_url=apiserver.url, timeout=10, verify=False)
    first = RouteTable.model_validate(table(route(variants=[variant("a", a, weight=1)])))
    api.post(CONFIGMAPS, json={"metadata": {"name": "routes"}, "data": first.to_configmap_data()})
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    argv = [PYTHON, "-m", "mlserving.cli", "route", "--configmap", "default/routes", "--kubeconfig", str(kubeconfig),
            "--port", str(port), "--host", "127.0.0.1", "--watch-timeout-seconds", "1"]  # fmt: skip
    router = Proc(argv, tmp_path / "router.log", env={"MLROUTER_SIGNING_KEY": SIGNING_KEY})
    try:
        wait_until(lambda: http_ok(f"{url}/v2/health/ready"), timeout=30, message="router ready")
        # Changes the router's watch does not see, then history dropped: its next resume is too old.
        api.post(CONFIGMAPS, json={"metadata": {"name": "unrelated"}, "data": {"x": "1"}})
        apiserver.compact()
        wait_until(lambda: "listing again" in router.output(), timeout=10, message="410 handled")
        second = RouteTable.model_validate(table(route(variants=[variant("b", b, weight=1)])))
        current = api.get(f"{CONFIGMAPS}/routes").json()
        current["data"] = second.to_configmap_data()
        assert api.put(f"{CONFIGMAPS}/routes", json=current).status_code == 200
        wait_until(lambda: served_by(url) == "b", timeout=5, interval=0.02)
    finally:
        router.stop()
        api.close()
