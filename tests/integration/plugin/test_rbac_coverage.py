"""The chart's RBAC covers the operator: every API call the real operator makes is allowed.

The API emulator (a real process) records every request in its audit log. The real operator runs
against it with the chart's HA settings (peering on), reconciles resources of the three kinds through
their life (create, readiness, a manual action, a spec change, deletion), and each recorded call is
then checked against the rules the chart renders, as the Kubernetes RBAC authorizer would.
"""

from __future__ import annotations

import contextlib
import json
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from support import SPECS_DIR, Proc, free_port, wait_until
from support.rbac import allowed, required_verbs

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO_ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO_ROOT / "tests" / "unit" / "chart"))
from chart_render import VALUE_SETS, render  # noqa: E402

BIN = Path(sys.executable).parent
GATEWAY_SPECS = SPECS_DIR / "gateway-api-v1.6.1"
TEST_AGENT = "mlrollouts-rbac-test"
MD = "/apis/mlrollouts.io/v1alpha1/namespaces/{ns}/modeldeployments"
PEERING = "mlr-mlrollouts"  # the chart's peering name for release "mlr"


class Emulator:
    def __init__(self, workdir: Path) -> None:
        self.kubeconfig = workdir / "kubeconfig"
        self.audit = workdir / "audit.jsonl"
        self.proc = Proc(
            [
                str(BIN / "mlrollouts"),
                "local",
                "apiserver",
                "--port",
                str(free_port()),
                "--kubeconfig",
                str(self.kubeconfig),
                "--audit-log",
                str(self.audit),
            ],
            workdir / "apiserver.log",
        )
        wait_until(
            lambda: self.proc.alive() and "serving on" in self.proc.output(),
            timeout=90,
            message="the API emulator",
        )
        server = yaml.safe_load(self.kubeconfig.read_text())["clusters"][0]["cluster"]["server"]
        self.http = httpx.Client(base_url=server, timeout=10, headers={"User-Agent": TEST_AGENT})

    def call(self, method: str, path: str, body: Any = None, patch: bool = False) -> Any:
        headers = {"Content-Type": "application/merge-patch+json"} if patch else {}
        response = self.http.request(method, path, json=body, headers=headers)
        if response.status_code >= 400:
            raise AssertionError(f"{method} {path}: {response.status_code} {response.text[:300]}")
        return response.json()

    def records(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.audit.read_text().splitlines() if line.strip()]

    def stop(self) -> None:
        self.http.close()
        self.proc.stop()


@contextlib.contextmanager
def kubelet(emu: Emulator) -> Iterator[None]:
    """The Deployment and Job controllers' and kubelet's part: every Deployment reports its replicas
    ready, every Job completes."""
    stop = threading.Event()

    def play() -> None:
        with httpx.Client(
            base_url=str(emu.http.base_url), timeout=5, headers={"User-Agent": TEST_AGENT}
        ) as http:
            while not stop.is_set():
                with contextlib.suppress(httpx.HTTPError, KeyError, ValueError):
                    for dep in http.get("/apis/apps/v1/deployments").json().get("items") or []:
                        meta, replicas = dep["metadata"], (dep.get("spec") or {}).get("replicas") or 0
                        status = dep.get("status") or {}
                        if (status.get("readyReplicas"), status.get("observedGeneration")) != (
                            replicas,
                            meta.get("generation"),
                        ):
                            http.patch(
                                f"/apis/apps/v1/namespaces/{meta['namespace']}/deployments/{meta['name']}/status",
                                json={
                                    "status": {
                                        "replicas": replicas,
                                        "readyReplicas": replicas,
                                        "availableReplicas": replicas,
                                        "updatedReplicas": replicas,
                                        "observedGeneration": meta.get("generation"),
                                    }
                                },
                                headers={"Content-Type": "application/merge-patch+json"},
                            )
                    for job in http.get("/apis/batch/v1/jobs").json().get("items") or []:
                        meta = job["metadata"]
                        if not (job.get("status") or {}).get("conditions"):
                            http.patch(
                                f"/apis/batch/v1/namespaces/{meta['namespace']}/jobs/{meta['name']}/status",
                                json={
                                    "status": {
                                        "succeeded": 1,
                                        "conditions": [{"type": "Complete", "status": "True"}],
                                    }
                                },
                                headers={"Content-Type": "application/merge-patch+json"},
                            )
                stop.wait(0.1)

    thread = threading.Thread(target=play, name="kubelet", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5)


# Grants this scenario does not call, each with the code path that needs it. A grant that is neither
# used nor listed here fails the test: the chart must not hand out more than the operator uses.
NOT_EXERCISED: dict[tuple[str, str], tuple[set[str], str]] = {
    **{
        (group, plural): ({"get", "list", "watch", "patch"}, "the Experiment and CompositeModel controllers")
        for group, plural in (("mlrollouts.io", "experiments"), ("mlrollouts.io", "compositemodels"))
    },
    ("mlrollouts.io", "experiments/status"): ({"patch"}, "the Experiment controller"),
    ("mlrollouts.io", "compositemodels/status"): ({"patch"}, "the CompositeModel controller"),
    ("mlrollouts.io", "modeldeployments"): (
        {"get"},
        "experiments and composites read the deployments they use",
    ),
    **{
        (group, plural): (
            {"get", "list", "delete"},
            "observing and removing children of old revisions/providers",
        )
        for group, plural in (
            ("apps", "deployments"),
            ("", "services"),
            ("", "serviceaccounts"),
            ("", "configmaps"),
            ("rbac.authorization.k8s.io", "roles"),
            ("rbac.authorization.k8s.io", "rolebindings"),
            ("gateway.networking.k8s.io", "httproutes"),
            ("networking.k8s.io", "ingresses"),
        )
    },
    ("events.k8s.io", "events"): ({"create"}, "events posted through the events.k8s.io API"),
    ("batch", "jobs"): ({"delete"}, "a revision's compile Job goes with the revision"),
    ("", "pods"): (
        {"list"},
        "a skops revision's refusal report (UntrustedModelTypes); these models are ONNX",
    ),
    ("admissionregistration.k8s.io", "validatingwebhookconfigurations"): (
        {"get", "update"},
        "the webhook's self-signed CA bundle (controller/admission.py inject_ca_bundle)",
    ),
}
ESCALATION = {
    ("", "configmaps", "watch"): "routers get a Role reading their table; RBAC grants only what one holds"
}


def unused_grants(rules: list[dict[str, Any]], calls: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
    used = {
        (r["apiGroup"], r["resource"] + (f"/{r['subresource']}" if r["subresource"] else ""), verb)
        for r in calls
        for verb in required_verbs(r)
    }
    granted = {
        (group, resource, verb)
        for rule in rules
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }
    return granted - used


def modeldeployment(name: str, provider: str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    traffic: dict[str, Any] = {"provider": provider}
    if provider == "GatewayAPI":
        traffic["gatewayAPI"] = {"parentRefs": [{"name": "public"}]}
    if provider == "IngressNginx":
        traffic["ingressNginx"] = {"host": f"{name}.example.com"}
    return {
        "apiVersion": "mlrollouts.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "model": {"uri": f"s3://models/{name}/1/model.onnx", "format": "onnx"},
            "traffic": traffic,
            "rollout": {"strategy": "Immediate", "scaleDownDelay": "1s"},
            **(extra or {}),
        },
    }


@pytest.fixture
def emulator(tmp_path: Path) -> Iterator[Emulator]:
    emu = Emulator(tmp_path)
    try:
        crds = [
            yaml.safe_load(p.read_text())
            for p in sorted((REPO_ROOT / "charts/mlrollouts/files/crds").glob("*.yaml"))
        ]
        crds += [
            d
            for d in yaml.safe_load_all(
                (REPO_ROOT / "charts/mlrollouts/charts/kopf-peering/crds/kopf-peering.yaml").read_text()
            )
            if d
        ]
        crds.append(yaml.safe_load((GATEWAY_SPECS / "httproutes.yaml").read_text()))
        for crd in crds:
            emu.call("POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", crd)
        wait_until(
            lambda: emu.http.get(MD.format(ns="default")).status_code == 200,
            timeout=10,
            message="CRDs served",
        )
        yield emu
    finally:
        emu.stop()


MODES = {
    "cluster": VALUE_SETS["ha"],
    "namespaced": {"replicaCount": 2, "watch": {"scope": "Namespaced", "namespaces": ["default"]}},
}


@pytest.mark.parametrize("mode", sorted(MODES))
def test_every_operator_call_is_allowed_by_the_chart(emulator: Emulator, tmp_path: Path, mode: str) -> None:
    rendered = render(MODES[mode])
    if mode == "cluster":
        rules = rendered.one("ClusterRole")["rules"]
        peering = rendered.one("ClusterKopfPeering")
        emulator.call("POST", "/apis/kopf.dev/v1/clusterkopfpeerings", peering)
    else:
        assert not rendered.of_kind("ClusterRole")
        rules = rendered.one("Role")["rules"]
        assert rendered.one("Role")["metadata"]["namespace"] == "default"
        peering = rendered.one("KopfPeering")
        emulator.call("POST", "/apis/kopf.dev/v1/namespaces/default/kopfpeerings", peering)
    args = [a for a in rendered.container["args"] if not a.startswith(("--liveness", "--metrics-port"))]
    assert f"--peering={PEERING}" in args
    operator = Proc(
        [str(BIN / "mlrollouts"), *args, "--priority=7", "--tick=0.5"],
        tmp_path / "operator.log",
        env={"KUBECONFIG": str(emulator.kubeconfig), "MLROLLOUTS_PROMETHEUS_URL": "http://127.0.0.1:9"},
    )
    suffix = uuid.uuid4().hex[:5]
    names = {p: f"{p.lower()}-{suffix}" for p in ("Router", "GatewayAPI", "IngressNginx", "Service")}
    try:
        with kubelet(emulator):
            for provider, name in names.items():
                emulator.call("POST", MD.format(ns="default"), modeldeployment(name, provider))
            # a scikit-learn model with a compile cache: its revision waits for a compile Job
            compiled = modeldeployment(f"compiled-{suffix}", "Service")
            compiled["spec"]["model"] = {
                "uri": "s3://models/compiled/1/model.skops",
                "format": "sklearn",
                "compileCache": {"persistentVolumeClaim": {"claimName": "compile-cache"}},
            }
            emulator.call("POST", MD.format(ns="default"), compiled)
            names["compiled"] = compiled["metadata"]["name"]
            for path in ("examples/ab-bandit", "examples/composite"):
                for doc in yaml.safe_load_all(next((REPO_ROOT / path).glob("*.yaml")).read_text()):
                    if doc:
                        plural = doc["kind"].lower() + "s"
                        emulator.call(
                            "POST", f"/apis/mlrollouts.io/v1alpha1/namespaces/default/{plural}", doc
                        )

            def observed(name: str, generation: int = 1) -> bool:
                status = emulator.call("GET", f"{MD.format(ns='default')}/{name}").get("status") or {}
                return (status.get("observedGeneration") or 0) >= generation

            # every provider gets its children; GatewayAPI then waits for a gateway controller
            for name in names.values():
                wait_until(
                    lambda n=name: observed(n),
                    timeout=90,
                    message=f"{name} reconciled\n{operator.output()[-3000:]}",
                )
            # the compiled revision's Deployment comes once its Job has completed
            wait_until(
                lambda: any(
                    d["metadata"]["name"].startswith(names["compiled"] + "-")
                    for d in emulator.call("GET", "/apis/apps/v1/namespaces/default/deployments")["items"]
                ),
                timeout=60,
                message=f"the compiled revision's Deployment\n{operator.output()[-3000:]}",
            )
            router = names["Router"]
            # a new revision, a manual action, and a deletion through the finalizer
            emulator.call(
                "PATCH",
                f"{MD.format(ns='default')}/{router}",
                {"spec": {"model": {"uri": "s3://models/router/2/model.onnx"}}},
                patch=True,
            )
            wait_until(
                lambda: (
                    (emulator.call("GET", f"{MD.format(ns='default')}/{router}").get("status") or {}).get(
                        "observedGeneration"
                    )
                    == 2
                ),
                timeout=90,
                message="the new revision observed",
            )
            emulator.call(
                "PATCH",
                f"{MD.format(ns='default')}/{names['Service']}",
                {"metadata": {"annotations": {"mlrollouts.io/action": "retry"}}},
                patch=True,
            )
            wait_until(
                lambda: (
                    "mlrollouts.io/action"
                    not in (
                        emulator.call("GET", f"{MD.format(ns='default')}/{names['Service']}")["metadata"].get(
                            "annotations"
                        )
                        or {}
                    )
                ),
                timeout=90,
                message="the action carried out",
            )
            emulator.call("DELETE", f"{MD.format(ns='default')}/{names['IngressNginx']}")
            wait_until(
                lambda: (
                    emulator.http.get(f"{MD.format(ns='default')}/{names['IngressNginx']}").status_code == 404
                ),
                timeout=90,
                message="deletion through the finalizer",
            )
    finally:
        operator.stop()

    def unexplained_grants() -> list[tuple[str, str, str]]:
        calls = [r for r in emulator.records() if r.get("resource") and r.get("userAgent") != TEST_AGENT]
        return sorted(
            grant
            for grant in unused_grants(rules, calls)
            if grant not in ESCALATION
            and grant[2] not in NOT_EXERCISED.get((grant[0], grant[1]), (set(), ""))[0]
        )

    # a watch is audited when its connection closes, which may lag the operator's exit under load
    with contextlib.suppress(AssertionError):
        wait_until(lambda: not unexplained_grants(), timeout=15)

    calls = [r for r in emulator.records() if r.get("resource") and r.get("userAgent") != TEST_AGENT]
    assert len(calls) > 20, "the operator made hardly any calls"
    if mode == "namespaced":
        # a namespaced operator does not scan CRDs and namespaces cluster-wide (a Role cannot allow it)
        outside = sorted(
            {
                f"{r['verb']} {r['resource']} in {r['namespace'] or 'the cluster'}"
                for r in calls
                if r["namespace"] != "default"
            }
        )
        assert not outside, f"a namespaced operator called outside its namespace: {outside}"
    denied = sorted(
        {
            f"{verb} {r['apiGroup'] or 'core'}/{r['resource']}{'/' + r['subresource'] if r['subresource'] else ''}"
            for r in calls
            for verb in required_verbs(r)
            if not allowed(r, rules, verb)
        }
    )
    assert not denied, (
        f"the chart's {mode} RBAC lacks: {denied}\n--- operator log ---\n{operator.output()[-2000:]}"
    )
    unexplained = unexplained_grants()
    assert not unexplained, f"granted but never used by the operator: {unexplained}"
    # the calls prove what the operator needs: its own kinds, their status, children and events
    used = {(r["apiGroup"], r["resource"], r["subresource"]) for r in calls}
    assert ("mlrollouts.io", "modeldeployments", "status") in used
    assert ("apps", "deployments", "") in used
    assert ("", "secrets", "") in used, "the Router provider's signing key was never created"
    assert ("batch", "jobs", "") in used, "the compile Job was never created"
    assert ("kopf.dev", "clusterkopfpeerings" if mode == "cluster" else "kopfpeerings", "") in used
