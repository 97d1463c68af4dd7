"""The canary scenario on a playground whose pods run as containers of the built images.

``python tests/images/playground_containers.py [--operator-from-chart] [--root DIR]`` (what
``hack/e2e-images.sh`` runs): starts the playground with ``runtime="podman"``, runs the canary of
`make demo` (v1 up, v2 promoted, a broken v3 rolled back) and prints where each part ran and the
total time. With ``--operator-from-chart`` the playground starts no operator of its own: the chart
(charts/mlrollouts, rendered offline with the Helm engine of helm-python-sdk as the chart tests do)
is applied to the API emulator, namespace, ServiceAccount, RBAC, settings ConfigMap and Deployment,
and the operator runs as a container of that Deployment, under a kubeconfig of its ServiceAccount;
every API call it makes is then checked against the chart's RBAC (exit 1 when one is not allowed).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
RELEASE_NAMESPACE = "mlrollouts-system"
CHART_KINDS = (
    "Namespace",
    "ServiceAccount",
    "ClusterRole",
    "ClusterRoleBinding",
    "Role",
    "RoleBinding",
    "ConfigMap",
    "Deployment",
)


def chart_objects(prometheus_url: str) -> list[dict[str, Any]]:
    """The chart's objects the operator needs to run, rendered for the playground: its Prometheus,
    no admission webhook (the emulator cannot reach a Service's webhook), one replica."""
    sys.path.insert(0, str(REPO / "tests" / "unit" / "chart"))
    from chart_render import render

    rendered = render(
        {
            "prometheus": {"address": prometheus_url},
            "webhook": {"enabled": False},
            "podDisruptionBudget": {"enabled": False},
            "metricsService": {"enabled": False},
            "tests": {"enabled": False},
            "operator": {"logFormat": "text"},
        },
        namespace=RELEASE_NAMESPACE,
    )
    objects = [o for o in rendered.objects if o["kind"] in CHART_KINDS]
    namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": RELEASE_NAMESPACE}}
    return [namespace, *objects]


def run(root: Path, operator_from_chart: bool) -> dict[str, Any]:
    from mlrollouts.controller.kube import KubeError, SyncKube
    from mlrollouts.local.demo_canary import CanaryScenario, train_demo_models
    from mlrollouts.local.demo_scenario import DemoContext
    from mlrollouts.local.playground import Playground

    started = time.monotonic()
    models = train_demo_models(root / "models")
    playground = Playground(root / "state", runtime="podman", operator=not operator_from_chart).start()
    demo = None
    report: dict[str, Any] = {}
    objects: list[dict[str, Any]] = []
    try:
        if operator_from_chart:
            objects = chart_objects(playground.prometheus_url)
            with SyncKube.from_environment(str(playground.kubeconfig)) as kube:
                for obj in objects:
                    try:
                        kube.create(obj)
                    except KubeError as exc:
                        if exc.status != 409:
                            raise
        demo = CanaryScenario(DemoContext(playground), models)
        demo.run()
        report["result"] = demo.result
        report["outcome"] = demo.outcome()
        report["pods"] = pod_report(playground)
    finally:
        if demo is not None:
            demo.stop()
        playground.stop()
    if operator_from_chart:  # read once the playground is down: a watch is audited when it closes
        report["rbac"] = rbac_report(objects, playground.logs / "audit.jsonl")
    report["seconds"] = round(time.monotonic() - started, 1)
    return report


def rbac_report(objects: list[dict[str, Any]], audit: Path) -> dict[str, Any]:
    """Every API call the operator's container made, checked against the chart's RBAC for its
    ServiceAccount (the playground's token names the account; the audit log records it)."""
    sys.path.insert(0, str(REPO / "tests"))
    from support.rbac import denied_calls, subject_rules

    account = next(o for o in objects if o["kind"] == "ServiceAccount")["metadata"]
    user = f"system:serviceaccount:{account['namespace']}:{account['name']}"
    records = [json.loads(line) for line in audit.read_text().splitlines() if line.strip()]
    calls = [r for r in records if r.get("user") == user and "resource" in r]
    denied = denied_calls(calls, subject_rules(objects, account["namespace"], account["name"]))
    kinds = sorted({f"{c['verb']} {c['apiGroup'] or 'core'}/{c['resource']}" for c in calls})
    return {
        "user": user,
        "calls": len(calls),
        "verbs and resources": kinds,
        "denied": [
            f"{verb} {c['apiGroup'] or 'core'}/{c['resource']} {c.get('namespace', '')}" for verb, c in denied
        ],
    }


def pod_report(playground: Any) -> list[str]:
    """One line per Deployment: the images its pods run from."""
    from mlrollouts.controller.kube import SyncKube

    lines = []
    with SyncKube.from_environment(str(playground.kubeconfig)) as kube:
        for deployment in kube.list("apps/v1", "Deployment"):
            meta = deployment["metadata"]
            images = [c["image"] for c in deployment["spec"]["template"]["spec"]["containers"]]
            lines.append(f"{meta['namespace']}/{meta['name']}: container of {', '.join(images)}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--operator-from-chart", action="store_true")
    parser.add_argument("--root", type=Path, help="work directory (default: a new temporary one)")
    args = parser.parse_args(argv)
    root = args.root or Path(tempfile.mkdtemp(prefix="mlrollouts-e2e-images-"))
    report = run(root, args.operator_from_chart)
    report["host processes"] = [
        "API emulator",
        "Prometheus",
        "kubelet (podman runtime) and its service proxy",
        *([] if args.operator_from_chart else ["operator"]),
        "canary client (traffic)",
    ]
    print(json.dumps(report, indent=2))
    rbac = report.get("rbac")
    if rbac is not None and (rbac["denied"] or not rbac["calls"]):
        print(f"the operator made calls the chart's RBAC does not allow (or none was audited): {rbac}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
