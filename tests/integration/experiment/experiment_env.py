"""A control plane and data plane on one machine for the Experiment controller's integration tests.

- the API emulator as its own process (``mlrollouts local apiserver``), mlrollouts CRDs registered;
- the operator as its own process: kopf running the Experiment controller's handlers against the
  emulator over HTTP, with a real Prometheus as its metrics source;
- ``mlserving serve`` processes playing the stable revisions of the ModelDeployments;
- two ``mlserving route`` processes per experiment, with the signing key the operator put in the
  Secret, serving the route table the operator writes into the ConfigMap. A sync thread plays the
  cluster's service DNS: it copies the table from the ConfigMap to the routers' file and replaces
  each Service URL (``http://<md>-<rev>.<ns>.svc:80``) with the local address of that revision's
  server. Weights, variants and stickiness pass through unchanged.
"""

from __future__ import annotations

import base64
import contextlib
import os
import re
import textwrap
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

from mlrollouts.api.crd import all_crds
from mlrollouts.builders.router import SIGNING_KEY_FIELD
from mlserving.router.table import ROUTES_CONFIGMAP_KEY
from support import PYTHON, Proc, free_port, http_ok, wait_until
from support.models import serve_argv

EXP_PATH = "/apis/mlrollouts.io/v1alpha1/namespaces/{ns}/experiments"
MD_PATH = "/apis/mlrollouts.io/v1alpha1/namespaces/{ns}/modeldeployments"

OPERATOR_SCRIPT = textwrap.dedent(
    """
    import asyncio, logging, sys
    import kopf
    from mlrollouts.controller import metrics, operator
    from mlrollouts.controller.experiment import ExperimentController
    from mlrollouts.controller.config import OperatorConfig

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    config = OperatorConfig(prometheus_url=sys.argv[1], tick=float(sys.argv[2]))
    metrics.serve(int(sys.argv[3]), host="127.0.0.1")
    asyncio.run(
        kopf.operator(
            clusterwide=True,
            memo=kopf.Memo(config=config),
            registry=operator.registry([ExperimentController()]),
            settings=operator.settings(None),
            standalone=True,
        )
    )
    """
)


class Api:
    """The emulator process and a small JSON client for it."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.kubeconfig = workdir / "kubeconfig"
        self.proc = Proc(
            [
                PYTHON, "-m", "mlrollouts.cli.main", "local", "apiserver",
                "--port", str(self.port), "--kubeconfig", str(self.kubeconfig),
            ],
            workdir / "apiserver.log",
        )  # fmt: skip
        self.http = httpx.Client(base_url=self.url, timeout=10)
        wait_until(self._up, timeout=30, message="API emulator up")
        for crd in all_crds():
            self.request("POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", crd)
        wait_until(
            lambda: self.http.get(EXP_PATH.format(ns="default")).status_code == 200,
            timeout=10,
            message="Experiment CRD served",
        )

    def _up(self) -> bool:
        if not self.proc.alive():
            raise AssertionError(f"emulator exited:\n{self.proc.output()[-3000:]}")
        return self.kubeconfig.exists() and http_ok(f"{self.url}/version")

    def request(self, method: str, path: str, body: Any = None, content_type: str | None = None) -> Any:
        headers = {"Content-Type": content_type} if content_type else {}
        response = self.http.request(method, path, json=body, headers=headers)
        if response.status_code >= 400:
            raise AssertionError(f"{method} {path}: {response.status_code} {response.text[:500]}")
        return response.json()

    def get(self, path: str) -> Any | None:
        response = self.http.get(path)
        return None if response.status_code == 404 else response.json()

    def stop(self) -> None:
        self.http.close()
        self.proc.stop()


def start_operator(api: Api, workdir: Path, prometheus_url: str, tick: float = 0.5) -> tuple[Proc, str]:
    """The operator process and the URL of its own metrics."""
    env = {"KUBECONFIG": str(api.kubeconfig), "PYTHONUNBUFFERED": "1"}
    port = free_port()
    proc = Proc(
        [PYTHON, "-c", OPERATOR_SCRIPT, prometheus_url, str(tick), str(port)],
        workdir / f"operator-{time.monotonic_ns()}.log",
        env={**os.environ, **env},
    )
    return proc, f"http://127.0.0.1:{port}/metrics"


@dataclass
class RouterReplica:
    url: str
    proc: Proc

    def metric(self, name: str, **labels: str) -> float:
        text = httpx.get(f"{self.url}/metrics", timeout=5).text
        total = 0.0
        for line in text.splitlines():
            sample, _, value = line.rpartition(" ")
            if sample.split("{")[0] == name and all(f'{k}="{v}"' in sample for k, v in labels.items()):
                total += float(value)
        return total


_SERVICE_URL = re.compile(r"^http://([a-z0-9-]+)\.([a-z0-9-]+)\.svc:80$")


@dataclass
class TableSync:
    """Copies the route table from the ConfigMap to a file, resolving Service URLs locally."""

    api: Api
    namespace: str
    configmap: str
    path: Path
    services: dict[str, str]  # "<service>" -> local base URL
    applied: list[dict[str, int]] = field(default_factory=list)  # weights, in order of change
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _last: str = ""

    def resolve(self, url: str) -> str:
        match = _SERVICE_URL.match(url)
        if match is None or match.group(2) != self.namespace or match.group(1) not in self.services:
            raise AssertionError(f"route table upstream {url!r} is not a known Service of {self.namespace}")
        return self.services[match.group(1)]

    def sync_once(self) -> bool:
        cm = self.api.get(f"/api/v1/namespaces/{self.namespace}/configmaps/{self.configmap}")
        if not cm:
            return False
        text = (cm.get("data") or {}).get(ROUTES_CONFIGMAP_KEY, "")
        if text == self._last:
            return True
        table = yaml.safe_load(text)
        for route in table["routes"]:
            for variant in route["variants"]:
                variant["upstreams"] = [self.resolve(u) for u in variant["upstreams"]]
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(yaml.safe_dump(table))
        tmp.replace(self.path)  # atomic, like a ConfigMap volume update
        self._last = text
        self.applied.append({v["name"]: v["weight"] for v in table["routes"][0]["variants"]})
        return True

    def start(self) -> TableSync:
        wait_until(self.sync_once, timeout=30, message=f"ConfigMap {self.namespace}/{self.configmap}")
        self._thread = threading.Thread(target=self._run, name="table-sync", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(httpx.HTTPError, AssertionError, OSError):
                self.sync_once()
            self._stop.wait(0.2)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)


@contextlib.contextmanager
def routers(workdir: Path, table: Path, signing_key: str, count: int = 2) -> Iterator[list[RouterReplica]]:
    """``count`` router replicas reading ``table``, sharing ``signing_key``."""
    started: list[RouterReplica] = []
    try:
        for _ in range(count):
            port = free_port()
            proc = Proc(
                [
                    PYTHON, "-m", "mlserving.cli", "route", "--config", str(table),
                    "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning",
                ],
                workdir / f"router-{port}.log",
                env={"MLROUTER_SIGNING_KEY": signing_key, "PYTHONUNBUFFERED": "1"},
            )  # fmt: skip
            started.append(RouterReplica(f"http://127.0.0.1:{port}", proc))
        for replica in started:
            wait_until(
                lambda r=replica: http_ok(f"{r.url}/v2/health/ready"),
                timeout=30,
                message=f"router {replica.url} ready",
            )
        yield started
    finally:
        for replica in started:
            replica.proc.stop()


def train_classifier(path: Path) -> Path:
    """A small iris classifier saved with skops (loads without trusting extra types)."""
    import skops.io as sio
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    x, y = load_iris(return_X_y=True)
    sio.dump(LogisticRegression(max_iter=500).fit(x, y), path)
    return path


@contextlib.contextmanager
def model_servers(workdir: Path, model: Path, revisions: dict[str, str]) -> Iterator[dict[str, str]]:
    """One ``mlserving serve`` per ModelDeployment (model name = its name), started together;
    yields the local base URL of each."""
    procs: dict[str, tuple[Proc, str]] = {}
    try:
        for md, revision in revisions.items():
            port = free_port()
            proc = Proc(
                serve_argv(model, name=md, port=port),
                workdir / f"mlserving-{md}.log",
                env={"MLSERVING_REVISION": revision, "PYTHONUNBUFFERED": "1"},
            )
            procs[md] = (proc, f"http://127.0.0.1:{port}")
        for md, (proc, url) in procs.items():
            wait_until(
                lambda p=proc, u=url, m=md: p.alive() and http_ok(f"{u}/v2/models/{m}/ready"),
                timeout=90,
                message=f"model server {md}",
            )
        yield {md: url for md, (_, url) in procs.items()}
    finally:
        for proc, _ in procs.values():
            proc.stop()


def signing_key(api: Api, namespace: str, experiment: str) -> str:
    secret = wait_until(
        lambda: api.get(f"/api/v1/namespaces/{namespace}/secrets/{experiment}-router-key"),
        timeout=20,
        message="router signing key Secret",
    )
    return base64.b64decode((secret.get("data") or {})[SIGNING_KEY_FIELD]).decode()


def model_deployment(name: str, model_uri: str) -> dict[str, Any]:
    return {
        "apiVersion": "mlrollouts.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": name},
        "spec": {"model": {"uri": model_uri, "name": name}},
    }


def serve_model_deployment(api: Api, ns: str, name: str, model_uri: str, revision: str) -> None:
    """The ModelDeployment with the status its controller writes once ``revision`` is stable."""
    api.request("POST", MD_PATH.format(ns=ns), model_deployment(name, model_uri))
    api.request(
        "PATCH",
        f"{MD_PATH.format(ns=ns)}/{name}/status",
        {"status": {"phase": "Healthy", "stableRevision": revision}},
        "application/merge-patch+json",
    )


def experiment_status(api: Api, ns: str, name: str) -> dict[str, Any]:
    return api.request("GET", f"{EXP_PATH.format(ns=ns)}/{name}").get("status") or {}


def events(api: Api, ns: str, name: str) -> list[dict[str, Any]]:
    items = api.request("GET", f"/api/v1/namespaces/{ns}/events").get("items") or []
    return [e for e in items if (e.get("involvedObject") or {}).get("name") == name]
