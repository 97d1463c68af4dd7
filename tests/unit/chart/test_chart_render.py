"""The Helm chart rendered by the real Helm engine, every object checked against the official schemas."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import helm_python
import pytest
from chart_render import (
    CHART_DIR,
    CRD_KINDS,
    NAMESPACE,
    RELEASE,
    VALUE_SETS,
    chart_crds,
    render,
    supported_versions,
    validate_official,
)

from mlrollouts.builders.common import Owner
from mlrollouts.builders.router import router_deployment
from mlrollouts.builders.serving import ServingRevision, serving_deployment

FULLNAME = f"{RELEASE}-mlrollouts"
OLDEST, NEWEST = supported_versions()
CLUSTER_SCOPED = {
    "ClusterRole",
    "ClusterRoleBinding",
    "ClusterKopfPeering",
    "CustomResourceDefinition",
    "ValidatingWebhookConfiguration",
}


@pytest.fixture(scope="module", params=sorted(VALUE_SETS))
def value_set(request: pytest.FixtureRequest) -> tuple[str, Any]:
    return request.param, render(VALUE_SETS[request.param])


def matches(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """A Kubernetes label selector (matchLabels and matchExpressions) against a set of labels."""
    for key, value in selector.get("matchLabels", {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions", []):
        key, op, values = expr["key"], expr["operator"], expr.get("values", [])
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and labels.get(key) in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


# --- the engine, the official schemas ---------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_helm_lint_is_clean(name: str) -> None:
    result = helm_python.lint(CHART_DIR, VALUE_SETS[name])
    assert result["errors"] == []
    assert [m for m in result["messages"] if m["severity"] >= 2] == []  # warnings and errors


@pytest.mark.parametrize("version", [OLDEST, NEWEST])
def test_every_rendered_object_validates_strictly(value_set: tuple[str, Any], version: str) -> None:
    name, rendered = value_set
    official = [o for o in rendered.objects if (o["apiVersion"], o["kind"]) not in CRD_KINDS]
    assert len(official) >= 6, name
    for obj in official:
        validate_official(obj, version)


def test_validation_catches_a_broken_object() -> None:
    rendered = render()
    deployment = rendered.deployment
    deployment["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["httpGet"]["portt"] = 1
    with pytest.raises(AssertionError, match="portt"):
        validate_official(deployment, NEWEST)


@pytest.mark.parametrize("version", [OLDEST, NEWEST])
def test_chart_crds_validate_strictly(version: str) -> None:
    crds = chart_crds()
    names = {c["metadata"]["name"] for c in crds}
    assert {"kopfpeerings.kopf.dev", "clusterkopfpeerings.kopf.dev"} <= names
    for crd in crds:
        validate_official(crd, version)


def test_crd_defined_kinds_are_structurally_sound(value_set: tuple[str, Any]) -> None:
    name, rendered = value_set
    for obj in rendered.objects:
        if (obj["apiVersion"], obj["kind"]) not in CRD_KINDS:
            continue
        meta = obj["metadata"]
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", meta["name"]), meta
        assert ("namespace" in meta) == (obj["kind"] not in CLUSTER_SCOPED), (name, obj["kind"])
        if obj["kind"] in ("ServiceMonitor", "PodMonitor"):
            spec = obj["spec"]
            assert spec["selector"].get("matchLabels") or spec["selector"].get("matchExpressions")
            endpoints = spec["endpoints" if obj["kind"] == "ServiceMonitor" else "podMetricsEndpoints"]
            for endpoint in endpoints:
                assert isinstance(endpoint["port"], str) and endpoint["path"] == "/metrics"
                for key in ("interval", "scrapeTimeout"):
                    assert re.fullmatch(r"([0-9]+(ms|s|m|h))+", endpoint[key]), endpoint
            assert set(spec["namespaceSelector"]) <= {"any", "matchNames"}


def test_objects_carry_release_labels_and_namespace(value_set: tuple[str, Any]) -> None:
    name, rendered = value_set
    for obj in rendered.objects:
        labels = obj["metadata"]["labels"]
        assert labels["app.kubernetes.io/instance"] == RELEASE, (name, obj["kind"])
        assert labels["app.kubernetes.io/managed-by"] == "Helm"
        if obj["kind"] in CLUSTER_SCOPED:
            assert "namespace" not in obj["metadata"]
        else:
            assert obj["metadata"]["namespace"], (name, obj["kind"], obj["metadata"]["name"])


# --- the operator Deployment --------------------------------------------------------------------------


def test_operator_pod_is_hardened(value_set: tuple[str, Any]) -> None:
    _name, rendered = value_set
    pod = rendered.deployment["spec"]["template"]["spec"]
    container = rendered.container
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] > 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    # a writable scratch directory, since the root filesystem is read-only
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]
    probe = container["livenessProbe"]["httpGet"]
    assert probe["path"] == "/healthz"
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert probe["port"] in ports
    assert f"--liveness=http://0.0.0.0:{ports['health']}/healthz" in container["args"]
    assert container["resources"]["requests"]["cpu"] and container["resources"]["limits"]["memory"]
    assert pod["serviceAccountName"] == FULLNAME
    assert container["args"][:2] == ["operator", "run"]


def test_single_replica_runs_standalone() -> None:
    rendered = render()
    assert rendered.deployment["spec"]["replicas"] == 1
    assert rendered.deployment["spec"]["strategy"]["type"] == "Recreate"
    assert not any(a.startswith(("--peering", "--priority")) for a in rendered.container["args"])
    assert "command" not in rendered.container  # the image's entry point: mlrollouts
    assert rendered.of_kind("PodDisruptionBudget") == []
    assert [o for o in rendered.objects if o["apiVersion"].startswith("kopf.dev")] == []
    rules = rendered.one("ClusterRole")["rules"]
    assert not any("kopf.dev" in r["apiGroups"] for r in rules)


def test_ha_pair_uses_peering_and_a_disruption_budget() -> None:
    rendered = render(VALUE_SETS["ha"])
    deployment = rendered.deployment
    assert deployment["spec"]["replicas"] == 2
    assert f"--peering={FULLNAME}" in rendered.container["args"]
    peering = rendered.one("ClusterKopfPeering")
    assert peering["metadata"]["name"] == FULLNAME
    pdb = rendered.one("PodDisruptionBudget")
    assert pdb["spec"]["minAvailable"] == 1
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert matches(pdb["spec"]["selector"], pod_labels)
    anti = deployment["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]
    term = anti["preferredDuringSchedulingIgnoredDuringExecution"][0]["podAffinityTerm"]
    assert matches(term["labelSelector"], pod_labels)
    rules = rendered.one("ClusterRole")["rules"]
    assert {
        "apiGroups": ["kopf.dev"],
        "resources": ["clusterkopfpeerings"],
        "verbs": ["list", "watch", "patch"],
    } in rules
    # the peering CRDs come with the chart (installed only when absent)
    assert {"kopfpeerings.kopf.dev", "clusterkopfpeerings.kopf.dev"} <= {
        c["metadata"]["name"] for c in chart_crds()
    }


def test_namespaced_mode_has_no_cluster_permissions() -> None:
    rendered = render(VALUE_SETS["namespaced"])
    kinds = {o["kind"] for o in rendered.objects}
    assert not kinds & {"ClusterRole", "ClusterRoleBinding"}
    roles = {r["metadata"]["namespace"]: r for r in rendered.of_kind("Role")}
    bindings = {b["metadata"]["namespace"]: b for b in rendered.of_kind("RoleBinding")}
    assert set(roles) == set(bindings) == {"team-a", "team-b"}
    for ns, binding in bindings.items():
        assert binding["roleRef"] == {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "Role",
            "name": FULLNAME,
        }
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": FULLNAME, "namespace": NAMESPACE}
        ], ns
    args = rendered.container["args"]
    assert "--namespace=team-a" in args and "--namespace=team-b" in args
    assert not any(a.startswith("--namespace") for a in render().container["args"])  # default: all
    settings = rendered.one("ConfigMap", f"{FULLNAME}-settings")["data"]
    assert settings["MLROLLOUTS_WATCH_NAMESPACES"] == "team-a,team-b"


def test_namespaced_mode_defaults_to_the_release_namespace_and_peers_there() -> None:
    rendered = render(VALUE_SETS["namespaced-ha-monitoring"])
    assert [r["metadata"]["namespace"] for r in rendered.of_kind("Role")] == [NAMESPACE]
    peering = rendered.one("KopfPeering")
    assert peering["metadata"]["namespace"] == NAMESPACE
    role_rules = rendered.one("Role")["rules"]
    assert any(r["resources"] == ["kopfpeerings"] for r in role_rules)
    assert rendered.one("PodMonitor")["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    assert rendered.container["image"] == "mlrollouts/operator@sha256:" + "0" * 64


def test_image_defaults_to_the_app_version() -> None:
    assert render().container["image"] == "mlrollouts/operator:0.1.0"
    assert render({"image": {"tag": "0.2.0-rc.1"}}).container["image"] == "mlrollouts/operator:0.2.0-rc.1"


def test_settings_reach_the_operator_and_roll_its_pods() -> None:
    values = {
        "prometheus": {"address": "http://prom.monitoring:9090"},
        "serving": {"image": "registry.local/ml/serving:1.2", "allowedImages": ["registry.local/ml/*"]},
    }
    rendered = render(values)
    settings = rendered.one("ConfigMap", f"{FULLNAME}-settings")
    assert settings["data"]["MLROLLOUTS_PROMETHEUS_URL"] == "http://prom.monitoring:9090"
    assert settings["data"]["MLROLLOUTS_SERVING_IMAGE"] == "registry.local/ml/serving:1.2"
    assert settings["data"]["MLROLLOUTS_ALLOWED_IMAGES"] == "registry.local/ml/*"
    assert rendered.container["envFrom"] == [{"configMapRef": {"name": f"{FULLNAME}-settings"}}]
    checksum = rendered.deployment["spec"]["template"]["metadata"]["annotations"]["checksum/settings"]
    default_checksum = render().deployment["spec"]["template"]["metadata"]["annotations"]["checksum/settings"]
    assert checksum != default_checksum


# --- RBAC ----------------------------------------------------------------------------------------------

FORBIDDEN_RESOURCES = {"secrets", "pods/exec", "pods/attach", "pods/portforward", "nodes", "nodes/proxy", "*"}
FORBIDDEN_VERBS = {"*", "escalate", "bind", "impersonate", "deletecollection"}


def test_rbac_is_least_privilege(value_set: tuple[str, Any]) -> None:
    name, rendered = value_set
    roles = rendered.of_kind("ClusterRole") + rendered.of_kind("Role")
    assert roles, name
    for role in roles:
        for rule in role["rules"]:
            assert "*" not in rule["apiGroups"], rule
            if rule["resources"] == ["secrets"] and rule["apiGroups"] == [""]:
                # the routers' signing keys: created, never read, listed or changed
                assert rule["verbs"] == ["create"], rule
                continue
            assert not set(rule["resources"]) & FORBIDDEN_RESOURCES, rule
            assert not set(rule["verbs"]) & FORBIDDEN_VERBS, rule
            assert "nonResourceURLs" not in rule
    # the operator edits no spec and no other object of the user: its own resources are only patched
    for role in roles:
        for rule in role["rules"]:
            if "mlrollouts.io" in rule["apiGroups"]:
                assert not set(rule["verbs"]) & {"create", "delete", "update"}, rule


def test_rbac_binds_the_operator_service_account(value_set: tuple[str, Any]) -> None:
    _name, rendered = value_set
    account = rendered.one("ServiceAccount")
    for binding in rendered.of_kind("ClusterRoleBinding") + rendered.of_kind("RoleBinding"):
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": account["metadata"]["name"], "namespace": NAMESPACE}
        ]
        role_kind = binding["roleRef"]["kind"]
        assert any(r["metadata"]["name"] == binding["roleRef"]["name"] for r in rendered.of_kind(role_kind))


def test_rbac_can_be_left_to_the_cluster_admin() -> None:
    rendered = render({"rbac": {"create": False}, "serviceAccount": {"create": False, "name": "ops"}})
    assert not {o["kind"] for o in rendered.objects} & {
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
    }
    assert rendered.of_kind("ServiceAccount") == []
    assert rendered.deployment["spec"]["template"]["spec"]["serviceAccountName"] == "ops"


# --- monitoring ------------------------------------------------------------------------------------------

DESIGN_METRICS = {
    "mlserving_requests_total",
    "mlserving_request_duration_seconds",
    "mlserving_predictions_total",
    "mlserving_feedback_total",
    "mlserving_reward_sum",
    "mlrouter_requests_total",
    "mlrouter_request_duration_seconds",
    "mlrouter_shadow_agreement_total",
    "mlrouter_feedback_total",
    "mlrouter_reward_sum",
    "mlserving_snapshot_version",
    "mlgraph_requests_total",
    "mlgraph_request_duration_seconds",
    "mlgraph_node_requests_total",
    "mlgraph_node_duration_seconds",
    "mlgraph_events_total",
    "mllearner_feedback_total",
    "mllearner_prequential",
    "mllearner_snapshot_version",
}


def operator_metrics() -> set[str]:
    """The series names the operator exports (counters with their _total suffix, histograms by family)."""
    from mlrollouts.controller.metrics import REGISTRY

    names = set()
    for family in REGISTRY.collect():
        names.add(f"{family.name}_total" if family.type == "counter" else family.name)
    return names


def test_monitoring_is_off_by_default() -> None:
    rendered = render()
    assert [o for o in rendered.objects if o["apiVersion"].startswith("monitoring.coreos.com")] == []
    assert [o for o in rendered.of_kind("ConfigMap") if o["metadata"]["name"].endswith("-dashboard")] == []


def test_service_monitor_scrapes_the_operator_metrics_service() -> None:
    rendered = render(VALUE_SETS["monitoring"])
    monitor = rendered.one("ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    service = rendered.one("Service", f"{FULLNAME}-metrics")
    assert matches(monitor["spec"]["selector"], service["metadata"]["labels"])
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    service_ports = {p["name"]: p for p in service["spec"]["ports"]}
    assert monitor["spec"]["endpoints"][0]["port"] in service_ports
    # the Service reaches the operator's metrics port and only the operator pods
    container_ports = {p["name"] for p in rendered.container["ports"]}
    assert service_ports["metrics"]["targetPort"] in container_ports
    pod_labels = rendered.deployment["spec"]["template"]["metadata"]["labels"]
    assert all(pod_labels.get(k) == v for k, v in service["spec"]["selector"].items())


def test_pod_monitor_scrapes_what_the_operator_builds() -> None:
    """The PodMonitor's selector and port match the serving and router pods the builders create."""
    monitor = render(VALUE_SETS["monitoring"]).one("PodMonitor")
    assert monitor["spec"]["namespaceSelector"] == {"any": True}
    owner = Owner(name="fraud", namespace="models", uid="u1")
    pods = [
        serving_deployment(
            ServingRevision(owner=owner, revision="abc123", model_name="fraud", model_uri="s3://m/1")
        )["spec"]["template"],
        router_deployment(owner)["spec"]["template"],
    ]
    port_name = monitor["spec"]["podMetricsEndpoints"][0]["port"]
    for pod in pods:
        assert matches(monitor["spec"]["selector"], pod["metadata"]["labels"]), pod["metadata"]["labels"]
        assert port_name in {p["name"] for p in pod["spec"]["containers"][0]["ports"]}
    # and nothing else: not the operator itself
    operator_pod = render().deployment["spec"]["template"]
    assert not matches(monitor["spec"]["selector"], operator_pod["metadata"]["labels"])


def test_dashboard_queries_use_the_design_metric_names() -> None:
    dashboard_cm = render(VALUE_SETS["monitoring"]).one("ConfigMap", f"{FULLNAME}-dashboard")
    assert dashboard_cm["metadata"]["namespace"] == "grafana"
    assert dashboard_cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    dashboard = json.loads(dashboard_cm["data"]["mlrollouts-rollouts.json"])
    assert dashboard["uid"] and dashboard["title"]
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    assert len(exprs) >= 8
    used: set[str] = set()
    for expr in exprs:
        assert expr.count("(") == expr.count(")"), expr
        for metric in re.findall(r"\b(ml(?:serving|router|rollouts|graph|learner)_[a-z_]+)(?=[{\[])", expr):
            # a histogram's series: <name>_bucket, <name>_count, <name>_sum
            base = re.sub(r"_(bucket|count|sum)$", "", metric)
            known = DESIGN_METRICS | operator_metrics()
            used.add(metric if metric in known or base not in known else base)
    unknown = {m for m in used if m not in DESIGN_METRICS | operator_metrics()}
    assert not unknown, unknown
    # traffic, errors, latency and rewards per revision, and the operator's decisions, are on the board
    for wanted in (
        "mlrouter_requests_total",
        "mlserving_requests_total",
        "mlserving_request_duration_seconds",
        "mlserving_predictions_total",
        "mlrouter_shadow_agreement_total",
        "mlrouter_reward_sum",
        "mlrollouts_weight_percent",
        "mlrollouts_analysis_results_total",
        "mlgraph_node_requests_total",
        "mlgraph_node_duration_seconds",
        "mllearner_prequential",
        "mlserving_snapshot_version",
    ):
        assert wanted in used, wanted
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    assert {"datasource", "namespace", "model"} <= variables
    for expr in exprs:
        for var in re.findall(r"\$([a-z_]+)", expr):
            assert var in variables or var.startswith("__"), var
    panel_ids = [p["id"] for p in dashboard["panels"]]
    assert len(panel_ids) == len(set(panel_ids))


# --- values.schema.json --------------------------------------------------------------------------------

BAD_VALUES = [
    ({"replicaCount": 0}, "/replicaCount"),
    ({"replicaCount": "2"}, "/replicaCount"),
    ({"watch": {"scope": "Everywhere"}}, "/watch/scope"),
    ({"watch": {"scope": "Namespaced", "namespaces": ["Team_A"]}}, "/watch/namespaces/0"),
    ({"prometheus": {"address": "prometheus:9090"}}, "/prometheus/address"),
    ({"serving": {"allowedImages": "mlrollouts/serving:*"}}, "/serving/allowedImages"),
    ({"serving": {"image": "not an image"}}, "/serving/image"),
    ({"image": {"digest": "sha256:abc"}}, "/image/digest"),
    ({"image": {"pullPolicy": "Sometimes"}}, "/image/pullPolicy"),
    ({"securityContext": {"allowPrivilegeEscalation": True}}, "/securityContext/allowPrivilegeEscalation"),
    ({"podSecurityContext": {"runAsNonRoot": False}}, "/podSecurityContext/runAsNonRoot"),
    ({"ports": {"metrics": 70000}}, "/ports/metrics"),
    ({"monitoring": {"podMonitor": {"interval": "often"}}}, "/monitoring/podMonitor/interval"),
    ({"operator": {"logLevel": "LOUD"}}, "/operator/logLevel"),
    ({"resources": {"limits": {"memory": "lots"}}}, "/resources/limits/memory"),
    ({"replicas": 2}, "additional properties 'replicas'"),
    ({"monitoring": {"serviceMonitor": {"enable": True}}}, "additional properties 'enable'"),
    ({"crds": {"install": "yes"}}, "/crds/install"),
    ({"crds": {"keep": 1}}, "/crds/keep"),
    ({"crds": {"upgrade": True}}, "additional properties 'upgrade'"),
    ({"providers": {"gatewayAPI": {"enabled": "false"}}}, "/providers/gatewayAPI/enabled"),
    ({"providers": {"ingressNginx": False}}, "/providers/ingressNginx"),
    ({"providers": {"istio": {"enabled": True}}}, "additional properties 'istio'"),
    (
        {"monitoring": {"serviceMonitor": {"relabelings": {"action": "drop"}}}},
        "/monitoring/serviceMonitor/relabelings",
    ),
    (
        {"monitoring": {"podMonitor": {"metricRelabelings": ["drop"]}}},
        "/monitoring/podMonitor/metricRelabelings/0",
    ),
]


@pytest.mark.parametrize(("values", "where"), BAD_VALUES, ids=[w for _, w in BAD_VALUES])
def test_schema_rejects_bad_values(values: dict[str, Any], where: str) -> None:
    with helm_python.Chart.load(CHART_DIR) as chart, pytest.raises(helm_python.HelmValuesError) as caught:
        chart.render(values, name=RELEASE, namespace=NAMESPACE)
    assert where in str(caught.value)


def test_schema_accepts_realistic_values() -> None:
    values = {
        "image": {"repository": "registry.example.com:5000/platform/mlrollouts-operator", "tag": "0.1.0"},
        "serving": {
            "image": "registry.example.com:5000/platform/serving@sha256:" + "a" * 64,
            "allowedImages": ["registry.example.com:5000/platform/*"],
        },
        "prometheus": {"address": "https://prometheus.example.com/prom"},
        "resources": {"requests": {"cpu": 0.5, "memory": "256Mi"}, "limits": {"memory": "1Gi"}},
        "podDisruptionBudget": {"minAvailable": "50%"},
        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "ops", "effect": "NoSchedule"}],
        "operator": {"extraEnv": [{"name": "HTTPS_PROXY", "value": "http://proxy:3128"}]},
        "replicaCount": 3,
    }
    rendered = render(values)
    assert rendered.deployment["spec"]["replicas"] == 3
    assert rendered.one("PodDisruptionBudget")["spec"]["minAvailable"] == "50%"
    for obj in rendered.objects:
        if (obj["apiVersion"], obj["kind"]) not in CRD_KINDS:
            validate_official(obj, NEWEST)


def test_service_monitor_needs_the_metrics_service() -> None:
    values = {"metricsService": {"enabled": False}, "monitoring": {"serviceMonitor": {"enabled": True}}}
    with (
        helm_python.Chart.load(CHART_DIR) as chart,
        pytest.raises(helm_python.HelmError, match="metricsService"),
    ):
        chart.render(values, name=RELEASE, namespace=NAMESPACE)


# --- helm test, NOTES ------------------------------------------------------------------------------------


def test_helm_test_hook_checks_the_metrics_service() -> None:
    rendered = render()
    pods = rendered.of_kind("Pod")
    assert len(pods) == 1
    pod = pods[0]
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    service = rendered.one("Service", f"{FULLNAME}-metrics")
    script = pod["spec"]["containers"][0]["args"][0]
    assert (
        f"{service['metadata']['name']}.{NAMESPACE}.svc:{service['spec']['ports'][0]['port']}/metrics"
        in script
    )
    compile(script, "helm-test", "exec")  # the check is valid Python
    # the test pod is not one of the operator pods behind the Service
    assert not all(pod["metadata"]["labels"].get(k) == v for k, v in service["spec"]["selector"].items())
    assert pod["spec"]["containers"][0]["securityContext"]["readOnlyRootFilesystem"] is True
    assert render({"tests": {"enabled": False}}).of_kind("Pod") == []


def test_notes_tell_how_to_check_and_use_the_release() -> None:
    notes = render(VALUE_SETS["namespaced"]).notes
    assert f"deployment/{FULLNAME}" in notes
    assert "team-a,team-b" in notes
    assert "kubectl mlrollouts status" in notes
    assert "{{" not in notes


def test_ha_replicas_draw_distinct_peering_priorities(tmp_path: Path) -> None:
    """kopf pauses peers of equal priority; the HA wrapper must hand `operator run` a valid priority."""
    container = render(VALUE_SETS["ha"]).container
    argv = [*container["command"], "operator", "run", "--tick=0"]
    argv[0] = sys.executable
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    result = subprocess.run(argv, capture_output=True, text=True, timeout=60, env=env, cwd=tmp_path)
    # argparse accepted --priority=<int>; the operator then refused only the deliberately bad tick
    assert "--tick: must be a positive" in result.stderr, result.stderr
    assert "unrecognized arguments" not in result.stderr and "invalid int" not in result.stderr
    code = container["command"][2]
    assert "--priority=" in code and "random" in code
