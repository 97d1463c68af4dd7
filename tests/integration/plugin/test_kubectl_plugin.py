"""`kubectl mlrollouts` commands as real processes against the API emulator, itself a real process.

The emulator is started with its CLI, the generated CRDs are applied, sample objects are created and
their status is written through the /status subresource, the way the operator writes it.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shlex
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client, config

from mlrollouts.api.compositemodel import CompositeModelStatus, CompositePhase, NodeStatus
from mlrollouts.api.experiment import ExperimentPhase, ExperimentStatus, VariantStatus, Winner
from mlrollouts.api.modeldeployment import (
    AnalysisRun,
    AnalysisStatus,
    LearningStatus,
    ModelDeployment,
    ModelDeploymentStatus,
    Phase,
    RevisionOutcome,
    RevisionRecord,
    RevisionWeight,
    SnapshotRecord,
)
from mlrollouts.cli.main import main
from mlrollouts.core.conditions import Condition, ConditionStatus
from mlrollouts.core.verdicts import Verdict
from mlrollouts.rollout.resource import revision_template, target_revision
from support import Proc, require_binary, wait_until

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[3]
BIN = Path(sys.executable).parent
PLUGIN = BIN / "kubectl-mlrollouts"
GROUP, VERSION = "mlrollouts.io", "v1alpha1"
NOW = datetime.now(UTC).replace(microsecond=0)
ACTION = "mlrollouts.io/action"


class Emulator:
    def __init__(self, kubeconfig: Path, audit: Path, proc: Proc) -> None:
        self.kubeconfig = kubeconfig
        self.audit = audit
        self.proc = proc
        api_client = config.new_client_from_config(config_file=str(kubeconfig))
        self.custom = client.CustomObjectsApi(api_client)
        self.extensions = client.ApiextensionsV1Api(api_client)
        self.apps = client.AppsV1Api(api_client)
        self.core = client.CoreV1Api(api_client)

    def audit_records(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.audit.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulator]:
    workdir = tmp_path_factory.mktemp("plugin-apiserver")
    kubeconfig, audit = workdir / "kubeconfig", workdir / "audit.jsonl"
    proc = Proc(
        [
            str(BIN / "mlrollouts"),
            "local",
            "apiserver",
            "--port",
            "0",
            "--kubeconfig",
            str(kubeconfig),
            "--audit-log",
            str(audit),
        ],
        workdir / "apiserver.log",
    )
    try:
        wait_until(
            lambda: proc.alive() and kubeconfig.exists() and "serving on" in proc.output(),
            timeout=30,
            message="the API emulator to serve",
        )
        emu = Emulator(kubeconfig, audit, proc)
        for path in sorted((REPO_ROOT / "crds").glob("*.yaml")):
            emu.extensions.create_custom_resource_definition(yaml.safe_load(path.read_text()))
        wait_until(lambda: _served(emu), timeout=10, message="the CRDs to be served")
        yield emu
    finally:
        proc.stop()


def _served(emu: Emulator) -> bool:
    for plural in ("modeldeployments", "experiments", "compositemodels"):
        emu.custom.list_namespaced_custom_object(GROUP, VERSION, "default", plural)
    return True


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """The CLI's entry point in this process (the emulator stays a separate process, spoken to over
    HTTP); the console script itself is run as a process by the watch and kubectl tests."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(args))
        except SystemExit as exc:  # argparse errors
            code = int(exc.code or 0)
    return subprocess.CompletedProcess(list(args), code, out.getvalue(), err.getvalue())


def run_plugin(emu: Emulator, *args: str) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, "--kubeconfig", str(emu.kubeconfig))


def ok(emu: Emulator, *args: str) -> str:
    result = run_plugin(emu, *args)
    assert result.returncode == 0, f"{args}: rc={result.returncode}\n{result.stdout}\n{result.stderr}"
    return result.stdout


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def example(kind_dir: str, name: str) -> dict[str, Any]:
    (doc,) = [
        d
        for path in sorted((REPO_ROOT / "examples" / kind_dir).glob("*.yaml"))
        for d in yaml.safe_load_all(path.read_text())
        if d and d.get("apiVersion", "").startswith("mlrollouts.io/") and "playground" not in path.name
    ][:1]
    doc["metadata"] = {"name": name, "namespace": "default"}
    return doc


CLEARED = {"candidateRevision", "currentStep", "step", "failedRevision", "stepStartedAt", "message"}
PLURALS = {
    "ModelDeployment": "modeldeployments",
    "Experiment": "experiments",
    "CompositeModel": "compositemodels",
}


def create(emu: Emulator, doc: dict[str, Any], status: Any | None = None) -> dict[str, Any]:
    plural = PLURALS[doc["kind"]]
    obj = emu.custom.create_namespaced_custom_object(GROUP, VERSION, "default", plural, doc)
    if status is not None:
        obj = set_status(emu, doc["kind"], doc["metadata"]["name"], status)
    return obj


def set_status(emu: Emulator, kind: str, name: str, status: Any) -> dict[str, Any]:
    """A merge patch of the whole status: fields unset in ``status`` are removed, as the operator does."""
    fields = status.model_dump(by_alias=True, mode="json")
    body = {"status": {key: value for key, value in fields.items() if value is not None or key in CLEARED}}
    return emu.custom.patch_namespaced_custom_object_status(
        GROUP, VERSION, "default", PLURALS[kind], name, body
    )


def read(emu: Emulator, name: str, plural: str = "modeldeployments") -> dict[str, Any]:
    return emu.custom.get_namespaced_custom_object(GROUP, VERSION, "default", plural, name)


def progressing_status(generation: int = 1) -> ModelDeploymentStatus:
    return ModelDeploymentStatus(
        phase=Phase.PROGRESSING,
        observed_generation=generation,
        stable_revision="a1b2c3d4",
        candidate_revision="e5f6a7b8",
        current_step=1,
        step="2/4",
        step_started_at=NOW - timedelta(seconds=50),
        weights=[
            RevisionWeight(revision="a1b2c3d4", desired=90, verified=90),
            RevisionWeight(revision="e5f6a7b8", desired=10, verified=8),
        ],
        weights_summary="a1b2c3d4:90 e5f6a7b8:10",
        analysis=AnalysisStatus(
            runs=[
                AnalysisRun(
                    time=NOW - timedelta(seconds=40),
                    check="errors",
                    verdict=Verdict.PASS,
                    revision="e5f6a7b8",
                    step=1,
                    value=0.002,
                    stable_value=0.003,
                    samples=812,
                ),
                AnalysisRun(
                    time=NOW - timedelta(seconds=10),
                    check="p99",
                    verdict=Verdict.INCONCLUSIVE,
                    revision="e5f6a7b8",
                    step=1,
                    samples=12,
                    message="12 samples, 50 needed",
                ),
            ],
            inconclusive_count=1,
        ),
        conditions=[
            Condition(
                type="Ready",
                status=ConditionStatus.TRUE,
                reason="StableServing",
                observed_generation=generation,
                last_transition_time=NOW - timedelta(minutes=5),
            ),
            Condition(
                type="Progressing",
                status=ConditionStatus.TRUE,
                reason="StepInProgress",
                observed_generation=generation,
                last_transition_time=NOW - timedelta(minutes=2),
                message="weight 10 % for 2m",
            ),
        ],
        message="canary at 10 %",
    )


def healthy_status(generation: int = 1) -> ModelDeploymentStatus:
    status = progressing_status(generation)
    status.phase, status.candidate_revision, status.current_step = Phase.HEALTHY, None, None
    status.step = None
    status.weights, status.message = [RevisionWeight(revision="a1b2c3d4", desired=100)], "serving a1b2c3d4"
    return status


def degraded_status() -> ModelDeploymentStatus:
    status = healthy_status()
    status.phase, status.failed_revision = Phase.DEGRADED, "e5f6a7b8"
    status.message = "AnalysisFailed: analysis failed 2 times (limit 2)"
    return status


def paused_status(reason: str) -> ModelDeploymentStatus:
    status = progressing_status()
    status.phase = Phase.PAUSED
    status.conditions[1] = Condition(
        type="Progressing",
        status=ConditionStatus.UNKNOWN,
        reason=reason,
        observed_generation=1,
        last_transition_time=NOW,
    )
    return status


def kubeconfig_flag(emu: Emulator) -> list[str]:
    return ["--kubeconfig", str(emu.kubeconfig)]


def step_column(emu: Emulator, name: str) -> str:
    """The STEP cell of `kubectl get mdep NAME -o wide`."""
    result = subprocess.run(
        [require_binary("kubectl"), "get", "mdep", name, "-o", "wide", "--kubeconfig", str(emu.kubeconfig)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    header, row = result.stdout.splitlines()[:2]
    return row[header.index("STEP") :].split()[0]


# --- get -----------------------------------------------------------------------------------------------


def test_get_lists_every_kind_with_phase_and_summary(emulator: Emulator) -> None:
    mdep, exp, comp = unique("fraud"), unique("reco"), unique("credit")
    create(emulator, example("canary", mdep), progressing_status())
    create(
        emulator,
        example("ab-bandit", exp),
        ExperimentStatus(
            phase=ExperimentPhase.CONCLUDED,
            observed_generation=1,
            variants=[VariantStatus(name="baseline", weight=0), VariantStatus(name="deep", weight=100)],
            winner=Winner(variant="deep", reason="probability to be best 0.97 >= 0.95"),
        ),
    )
    create(
        emulator,
        example("composite", comp),
        CompositeModelStatus(
            phase=CompositePhase.READY,
            observed_generation=1,
            endpoint="http://credit.default.svc",
            nodes=[NodeStatus(name="income", ready=True), NodeStatus(name="history", ready=True)],
        ),
    )

    rows = {line.split()[1]: line.split() for line in ok(emulator, "get").splitlines()[1:]}
    assert rows[mdep][:3] == ["mdep", mdep, "Progressing"]
    assert "a1b2c3d4:90" in rows[mdep]
    assert rows[exp][:3] == ["mlexp", exp, "Concluded"] and "deep" in rows[exp]
    assert rows[comp][:3] == ["cmodel", comp, "Ready"] and "2/2" in rows[comp]

    only = ok(emulator, "get", "mdep", "-A")
    assert only.splitlines()[0].split()[0] == "NAMESPACE"
    assert mdep in only and exp not in only

    one = json.loads(ok(emulator, "get", f"mlexp/{exp}", "-o", "json"))
    assert one["status"]["winner"]["variant"] == "deep"


def serving_labels(name: str, revision: str) -> dict[str, str]:
    return {
        "mlrollouts.io/owner": f"ModelDeployment.{name}",
        "app.kubernetes.io/component": "serving",
        "mlrollouts.io/revision": revision,
    }


def add_deployment(emu: Emulator, name: str, revision: str, replicas: int, ready: int) -> None:
    labels = serving_labels(name, revision)
    body = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": f"{name}-{revision}", "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "server", "image": "mlrollouts/serving"}]},
            },
        },
    }
    emu.apps.create_namespaced_deployment("default", body)
    emu.apps.patch_namespaced_deployment_status(
        f"{name}-{revision}", "default", {"status": {"replicas": replicas, "readyReplicas": ready}}
    )


def add_pod(emu: Emulator, pod: str, labels: dict[str, str], container_status: dict[str, Any]) -> None:
    body = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": pod, "labels": labels},
        "spec": {"containers": [{"name": "server", "image": "mlrollouts/serving"}]},
    }
    emu.core.create_namespaced_pod("default", body)
    status = {
        "phase": "Running",
        "containerStatuses": [{"name": "server", "image": "x", "imageID": "", **container_status}],
    }
    emu.core.patch_namespaced_pod_status(pod, "default", {"status": status})


def test_get_name_shows_revisions_with_their_deployment_and_pods(emulator: Emulator) -> None:
    name = unique("fraud")
    status = progressing_status()
    status.revisions = [
        RevisionRecord(revision="a1b2c3d4", model_version="2", created_at=NOW - timedelta(days=1)),
        RevisionRecord(revision="e5f6a7b8", model_version="3", created_at=NOW - timedelta(minutes=5)),
    ]
    create(emulator, example("canary", name), status)
    add_deployment(emulator, name, "a1b2c3d4", replicas=1, ready=1)
    add_deployment(emulator, name, "e5f6a7b8", replicas=1, ready=0)
    running = {"ready": True, "restartCount": 0, "state": {"running": {}}}
    crashing = {"ready": False, "restartCount": 4, "state": {"waiting": {"reason": "CrashLoopBackOff"}}}
    add_pod(emulator, f"{name}-a1b2c3d4-1", serving_labels(name, "a1b2c3d4"), running)
    add_pod(emulator, f"{name}-e5f6a7b8-1", serving_labels(name, "e5f6a7b8"), crashing)
    add_pod(emulator, f"{name}x-a1b2c3d4-1", serving_labels(f"{name}x", "a1b2c3d4"), running)  # not its own

    out = ok(emulator, "get", name)
    assert f"Step:       {step_column(emulator, name)}: weight 10% for 2m" in out
    header, *tree = out.split("\n\n", 1)[1].splitlines()
    assert [row[: header.index("KIND")].rstrip() for row in tree] == [
        name,
        "├─ revision e5f6a7b8",
        f"│  └─ {name}-e5f6a7b8",
        f"│     └─ {name}-e5f6a7b8-1",
        "└─ revision a1b2c3d4",
        f"   └─ {name}-a1b2c3d4",
        f"      └─ {name}-a1b2c3d4-1",
    ], out
    assert "Candidate" in tree[1] and "weight 10% (verified 8%), model 3" in tree[1]
    assert "Progressing" in tree[2] and "0/1 ready" in tree[2]
    assert "CrashLoopBackOff" in tree[3] and "ready 0/1, restarts 4" in tree[3]
    assert "Stable" in tree[4] and "weight 90%, model 2" in tree[4]
    assert "Ready" in tree[5] and "1/1 ready" in tree[5]
    assert "Running" in tree[6] and "ready 1/1, restarts 0" in tree[6]


# --- status --------------------------------------------------------------------------------------------


def test_status_shows_phase_step_weights_and_recent_checks(emulator: Emulator) -> None:
    name = unique("fraud")
    create(emulator, example("canary", name), progressing_status())
    out = ok(emulator, "status", name, "--no-wait")
    assert f"ModelDeployment default/{name}" in out
    assert "Phase:      Progressing  (canary at 10 %)" in out
    assert step_column(emulator, name) == "2/4"  # what `kubectl get -o wide` shows, the plugin shows
    assert "Step:       2/4: weight 10% for 2m" in out
    assert "Weights:    a1b2c3d4 90%, e5f6a7b8 10% (verified 8%)" in out
    assert "Stable:     a1b2c3d4" in out and "Candidate:  e5f6a7b8" in out
    checks = out.split("Recent checks:")[1].splitlines()[2:]  # after the header row
    assert checks[0].split()[1:5] == ["p99", "e5f6a7b8", "2", "Inconclusive"]  # newest first
    assert "12 samples, 50 needed" in checks[0]
    assert checks[1].split()[1:6] == ["errors", "e5f6a7b8", "2", "Pass", "0.002"]
    assert "StepInProgress" in out


def test_status_of_other_kinds(emulator: Emulator) -> None:
    exp = unique("reco")
    create(
        emulator,
        example("ab-bandit", exp),
        ExperimentStatus(
            phase=ExperimentPhase.RUNNING,
            observed_generation=1,
            variants=[
                VariantStatus(
                    name="baseline",
                    weight=70,
                    requests=1200,
                    reward_count=300,
                    mean=0.11,
                    probability_to_be_best=0.2,
                ),
                VariantStatus(
                    name="deep",
                    weight=30,
                    requests=500,
                    reward_count=150,
                    mean=0.14,
                    probability_to_be_best=0.8,
                ),
            ],
        ),
    )
    out = ok(emulator, "status", f"mlexp/{exp}")
    assert "Policy:     ThompsonSampling" in out
    deep = next(line for line in out.splitlines() if line.strip().startswith("deep"))
    assert deep.split()[:5] == ["deep", "30%", "500", "150", "0.14"]


def test_status_watch_follows_changes_live(emulator: Emulator, tmp_path: Path) -> None:
    name = unique("fraud")
    create(emulator, example("canary", name), progressing_status())
    watcher = Proc(
        [
            str(PLUGIN),
            "status",
            name,
            "--watch",
            "--interval",
            "0.2",
            "--timeout",
            "60",
            "--kubeconfig",
            str(emulator.kubeconfig),
        ],
        tmp_path / "watch.log",
    )
    try:
        wait_until(
            lambda: "Phase:      Progressing" in watcher.output(), timeout=30, message="the first frame"
        )
        healthy = progressing_status()
        healthy.phase, healthy.current_step, healthy.candidate_revision = Phase.HEALTHY, None, None
        healthy.weights, healthy.message = [RevisionWeight(revision="e5f6a7b8", desired=100)], "promoted"
        set_status(emulator, "ModelDeployment", name, healthy)
        wait_until(
            lambda: "Phase:      Healthy  (promoted)" in watcher.output(), timeout=30, message="the change"
        )
        emulator.custom.delete_namespaced_custom_object(GROUP, VERSION, "default", "modeldeployments", name)
        wait_until(lambda: not watcher.alive(), timeout=30, message="the watch to end")
        assert watcher.popen.returncode == 1
        output = watcher.output()
        assert f'ModelDeployment "{name}" was deleted' in output
        assert output.count("---") >= 1  # one frame per change, not one per poll
        assert output.count("Phase:      Healthy") == 1
    finally:
        watcher.stop()


def test_status_exits_by_phase_like_argo_rollouts(emulator: Emulator) -> None:
    healthy, degraded, progressing = unique("ok"), unique("bad"), unique("slow")
    create(emulator, example("canary", healthy), healthy_status())
    create(emulator, example("canary", degraded), degraded_status())
    create(emulator, example("canary", progressing), progressing_status())

    done = run_plugin(emulator, "status", healthy)
    assert done.returncode == 0 and done.stdout.splitlines()[-1] == "Healthy - serving a1b2c3d4"
    failed = run_plugin(emulator, "status", degraded)
    assert failed.returncode == 1
    assert failed.stdout.splitlines()[-1] == "Degraded - AnalysisFailed: analysis failed 2 times (limit 2)"

    waited = run_plugin(emulator, "status", progressing, "--timeout", "0.5s", "--interval", "0.1")
    assert waited.returncode == 124
    step = step_column(emulator, progressing)
    assert waited.stdout.splitlines()[-1] == f"Progressing - step {step}: weight 10% for 2m - canary at 10 %"
    assert "timed out after 0.5s" in waited.stderr

    assert run_plugin(emulator, "status", progressing, "--no-wait").returncode == 0
    assert run_plugin(emulator, "status", degraded, "--no-wait").returncode == 1


def test_status_waits_for_the_operator_then_exits_when_healthy(emulator: Emulator, tmp_path: Path) -> None:
    name = unique("fraud")
    create(emulator, example("canary", name), healthy_status())
    # a new generation the operator has not seen yet: the old Healthy is no answer
    emulator.custom.patch_namespaced_custom_object(
        GROUP, VERSION, "default", "modeldeployments", name, {"spec": {"model": {"version": "9"}}}
    )
    waiter = Proc(
        [str(PLUGIN), "status", name, "--interval", "0.2", "--timeout", "60", *kubeconfig_flag(emulator)],
        tmp_path / "status.log",
    )
    try:
        wait_until(
            lambda: "Healthy - waiting for the operator to observe generation 2" in waiter.output(),
            timeout=30,
            message="the wait for generation 2",
        )
        set_status(emulator, "ModelDeployment", name, progressing_status(generation=2))
        wait_until(lambda: "Progressing - step" in waiter.output(), timeout=30, message="a progress line")
        assert waiter.alive()
        set_status(emulator, "ModelDeployment", name, healthy_status(generation=2))
        wait_until(lambda: not waiter.alive(), timeout=30, message="the status command to end")
        assert waiter.popen.returncode == 0
        assert waiter.output().splitlines()[-1] == "Healthy - serving a1b2c3d4"
    finally:
        waiter.stop()


def test_a_closed_pipe_ends_the_plugin_quietly(emulator: Emulator) -> None:
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before the first line, as `| head -0` leaves it
    try:
        result = subprocess.run(
            [str(PLUGIN), "get", "--kubeconfig", str(emulator.kubeconfig)],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
        )
    finally:
        os.close(write_end)
    assert result.stderr == ""
    assert result.returncode == 141


# --- actions -----------------------------------------------------------------------------------------


def test_actions_set_the_annotation_and_refuse_to_trample_a_pending_one(emulator: Emulator) -> None:
    name = unique("fraud")
    create(emulator, example("canary", name), progressing_status())
    out = ok(emulator, "promote", name)
    assert "promote requested (phase Progressing)" in out and "then the next step runs" in out
    assert read(emulator, name)["metadata"]["annotations"][ACTION] == "promote"

    refused = run_plugin(emulator, "abort", name)
    assert refused.returncode == 1
    assert "'promote' is still pending" in refused.stderr and "--force" in refused.stderr
    assert read(emulator, name)["metadata"]["annotations"][ACTION] == "promote"

    out = ok(emulator, "promote", name, "--full", "--force")
    assert "remaining steps are skipped and revision e5f6a7b8 goes to 100 %" in out
    assert read(emulator, name)["metadata"]["annotations"][ACTION] == "promote-full"

    ok(emulator, "abort", name, "--force")
    assert read(emulator, name)["metadata"]["annotations"][ACTION] == "abort"

    # the operator carries the action out, removes the annotation and reports the rollback
    emulator.custom.patch_namespaced_custom_object(
        GROUP, VERSION, "default", "modeldeployments", name, {"metadata": {"annotations": {ACTION: None}}}
    )
    set_status(emulator, "ModelDeployment", name, degraded_status())
    ok(emulator, "retry", f"mdep/{name}")
    obj = read(emulator, name)
    assert obj["metadata"]["annotations"][ACTION] == "retry"
    assert obj["metadata"]["generation"] == 1  # annotations never touch the spec


@pytest.mark.parametrize(
    ("command", "status", "why"),
    [
        ("promote", healthy_status(), "nothing done: no rollout is in progress (phase Healthy)"),
        ("abort", healthy_status(), "nothing done: no rollout is in progress (phase Healthy)"),
        ("retry", healthy_status(), "there is no rolled-back revision to retry (phase Healthy)"),
        ("resume", progressing_status(), "nothing to resume: the rollout is not paused (phase Progressing)"),
        ("pause", healthy_status(), "no rollout is in progress (phase Healthy); to hold the next rollout"),
        ("promote", paused_status("PausedBySpec"), "paused by spec.rollout.paused; `mlrollouts resume"),
        ("promote", degraded_status(), "no rollout is in progress (phase Degraded)"),
    ],
)
def test_an_action_that_would_change_nothing_is_refused_and_not_written(
    emulator: Emulator, command: str, status: ModelDeploymentStatus, why: str
) -> None:
    name = unique("fraud")
    create(emulator, example("canary", name), status)
    before = read(emulator, name)
    result = run_plugin(emulator, command, name)
    assert result.returncode == 1, result.stdout
    assert why in result.stderr and result.stdout == ""
    after = read(emulator, name)
    assert ACTION not in (after["metadata"].get("annotations") or {})
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]


def test_pause_sets_the_spec_field_and_resume_clears_it(emulator: Emulator) -> None:
    name = unique("fraud")
    create(emulator, example("canary", name), progressing_status())
    ok(emulator, "pause", name)
    obj = read(emulator, name)
    assert obj["spec"]["rollout"]["paused"] is True
    assert obj["metadata"]["generation"] == 2
    assert ACTION not in (obj["metadata"].get("annotations") or {})
    again = run_plugin(emulator, "pause", name)
    assert again.returncode == 1 and "already paused" in again.stderr
    assert "(paused by spec.rollout.paused)" in ok(emulator, "status", name, "--no-wait")

    # a pause of the spec ends with the spec: no action for the operator to ignore
    out = ok(emulator, "resume", name)
    assert out.strip().endswith("spec.rollout.paused=false")
    obj = read(emulator, name)
    assert obj["spec"]["rollout"]["paused"] is False
    assert ACTION not in (obj["metadata"].get("annotations") or {})
    # the rest of the spec is untouched
    assert obj["spec"]["rollout"]["steps"] == example("canary", name)["spec"]["rollout"]["steps"]

    # a hold of the operator's own (an approval step) ends with the action
    set_status(emulator, "ModelDeployment", name, paused_status("AwaitingApproval"))
    assert "resume requested (the operator ends its hold)" in ok(emulator, "resume", name)
    assert read(emulator, name)["metadata"]["annotations"][ACTION] == "resume"


# --- history -----------------------------------------------------------------------------------------


def test_history_lists_revisions_and_learning_snapshots(emulator: Emulator) -> None:
    name = unique("fraud")
    status = progressing_status()
    status.revisions = [
        RevisionRecord(
            revision="0a0a0a0a",
            model_version="1",
            model_uri="s3://m/fraud/1",
            created_at=NOW - timedelta(days=3),
            finished_at=NOW - timedelta(days=2),
            outcome=RevisionOutcome.SUPERSEDED,
        ),
        RevisionRecord(
            revision="dead0000",
            model_version="1.5",
            created_at=NOW - timedelta(days=2),
            finished_at=NOW - timedelta(days=2),
            outcome=RevisionOutcome.ROLLED_BACK,
            message="errors above 0.01 twice",
        ),
        RevisionRecord(
            revision="a1b2c3d4",
            model_version="2",
            created_at=NOW - timedelta(days=1),
            outcome=RevisionOutcome.PROMOTED,
        ),
        RevisionRecord(
            revision="e5f6a7b8",
            model_version="3",
            created_at=NOW - timedelta(minutes=5),
            outcome=RevisionOutcome.SERVING,
        ),
    ]
    status.learning = LearningStatus(
        latest_snapshot=2,
        serving_snapshot=2,
        last_good_snapshot=1,
        snapshots=[
            SnapshotRecord(version=1, samples=1000, metrics={"accuracy": 0.91}, data_range="0-999"),
            SnapshotRecord(
                version=2, parent=1, samples=2000, metrics={"accuracy": 0.93}, data_range="1000-1999"
            ),
        ],
    )
    create(emulator, example("canary", name), status)
    out = ok(emulator, "history", name)
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["REVISION", "NOW", "VERSION"]
    by_rev = {line.split()[0]: line for line in lines[1:5]}
    assert "RolledBack" in by_rev["dead0000"] and "errors above 0.01 twice" in by_rev["dead0000"]
    assert by_rev["a1b2c3d4"].split()[1] == "stable"
    assert by_rev["e5f6a7b8"].split()[1] == "candidate"
    assert "s3://m/fraud/1" in by_rev["0a0a0a0a"]
    assert "Learning snapshots:" in out
    assert any(
        line.split()[:2] == ["2", "1"] and "accuracy=0.93" in line and "1000-1999" in line for line in lines
    )


# --- undo --------------------------------------------------------------------------------------------


def versioned(name: str, version: str, env: list[dict[str, str]] | None = None) -> dict[str, Any]:
    doc = example("canary", name)
    doc["spec"]["model"].update(uri=f"file:///models/fraud/v{version}/model.onnx", version=version)
    if env is not None:
        doc["spec"]["serving"]["env"] = env
    return doc


def recorded(doc: dict[str, Any], outcome: RevisionOutcome, with_template: bool = True) -> RevisionRecord:
    md = ModelDeployment.model_validate(doc)
    return RevisionRecord(
        revision=target_revision(md),
        model_uri=md.spec.model.uri,
        model_version=md.spec.model.version,
        created_at=NOW - timedelta(hours=1),
        outcome=outcome,
        template=revision_template(md) if with_template else None,
    )


def undo_case(emu: Emulator) -> tuple[str, dict[str, RevisionRecord]]:
    """v1 (with an env var), v2 rolled back, v3 serving (the spec now); v0 recorded without its spec."""
    name = unique("fraud")
    docs = {
        "v0": versioned(name, "0"),
        "v1": versioned(name, "1", env=[{"name": "THREADS", "value": "2"}]),
        "v2": versioned(name, "2"),
        "v3": versioned(name, "3"),
    }
    records = {
        "v0": recorded(docs["v0"], RevisionOutcome.SUPERSEDED, with_template=False),
        "v1": recorded(docs["v1"], RevisionOutcome.SUPERSEDED),
        "v2": recorded(docs["v2"], RevisionOutcome.ROLLED_BACK),
        "v3": recorded(docs["v3"], RevisionOutcome.SERVING),
    }
    status = healthy_status()
    status.stable_revision = records["v3"].revision
    status.revisions = list(records.values())
    create(emu, docs["v3"], status)
    return name, records


def spec_revision(emu: Emulator, name: str) -> str:
    return target_revision(ModelDeployment.model_validate(read(emu, name)))


def test_undo_prints_the_exact_patch_that_brings_back_the_previous_revision(emulator: Emulator) -> None:
    name, records = undo_case(emulator)
    out = ok(emulator, "undo", name)  # the newest earlier revision not rolled back: v1
    assert spec_revision(emulator, name) == records["v3"].revision  # nothing changed
    assert f"Back to revision {records['v1'].revision}" in out
    assert 'spec.model.version: "3" -> "1"' in out
    assert 'spec.serving.env: (unset) -> [{"name": "THREADS", "value": "2"}]' in out
    assert "Argo CD" in out and "--apply" in out
    (command,) = [line for line in out.splitlines() if line.startswith("kubectl patch ")]
    kubectl = require_binary("kubectl")
    result = subprocess.run(
        [kubectl, *shlex.split(command)[1:], *kubeconfig_flag(emulator)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert spec_revision(emulator, name) == records["v1"].revision
    assert read(emulator, name)["spec"]["serving"]["replicas"] == 2  # scaling is not part of a revision

    # and back again, by a prefix of the revision, applied by the plugin; the env var is emptied
    out = ok(emulator, "undo", name, "--to-revision", records["v3"].revision[:6], "--apply")
    assert "patched" in out and 'spec.serving.env: [{"name": "THREADS", "value": "2"}] -> []' in out
    assert spec_revision(emulator, name) == records["v3"].revision


def test_undo_refuses_what_it_cannot_restore(emulator: Emulator) -> None:
    name, records = undo_case(emulator)
    before = read(emulator, name)["metadata"]["resourceVersion"]
    unknown = run_plugin(emulator, "undo", name, "--to-revision", "ffffffff")
    assert unknown.returncode == 1
    assert "revision 'ffffffff' is not in the revision history (known revisions: " in unknown.stderr
    same = run_plugin(emulator, "undo", name, "--to-revision", records["v3"].revision, "--apply")
    assert same.returncode == 1 and "is already the one spec.model and spec.serving describe" in same.stderr
    blind = run_plugin(emulator, "undo", name, "--to-revision", records["v0"].revision, "--apply")
    assert blind.returncode == 1 and "was recorded without its spec" in blind.stderr
    assert read(emulator, name)["metadata"]["resourceVersion"] == before


# --- errors ------------------------------------------------------------------------------------------


def test_errors_are_one_clear_line(emulator: Emulator, tmp_path: Path) -> None:
    missing = run_plugin(emulator, "status", "no-such-model")
    assert missing.returncode == 1
    assert missing.stderr.strip() == (
        'error: ModelDeployment, Experiment or CompositeModel "no-such-model" in namespace "default" not found'
    )
    typed = run_plugin(emulator, "status", "mdep/no-such-model")
    assert typed.stderr.strip() == 'error: ModelDeployment "no-such-model" in namespace "default" not found'

    wrong_kind = run_plugin(emulator, "promote", "cmodel/credit")
    assert wrong_kind.returncode == 1 and "applies to ModelDeployments" in wrong_kind.stderr

    bad_kind = run_plugin(emulator, "get", "pods", "x")
    assert bad_kind.returncode == 1 and "unknown kind 'pods'" in bad_kind.stderr
    neither = run_plugin(emulator, "get", "pods")
    assert (
        neither.returncode == 1
        and "'pods' is neither a kind (mdep, mlexp, cmodel) nor the name" in neither.stderr
    )

    dead = yaml.safe_load(emulator.kubeconfig.read_text())
    dead["clusters"][0]["cluster"]["server"] = "http://127.0.0.1:9"  # discard port: nothing listens
    dead_path = tmp_path / "dead-kubeconfig"
    dead_path.write_text(yaml.safe_dump(dead))
    unreachable = subprocess.run(
        [str(PLUGIN), "get", "--kubeconfig", str(dead_path)], capture_output=True, text=True, timeout=120
    )
    assert unreachable.returncode == 1
    assert "cannot reach the API server at http://127.0.0.1:9" in unreachable.stderr
    assert "Traceback" not in unreachable.stderr


def test_namespace_comes_from_the_flag_or_the_context(emulator: Emulator, tmp_path: Path) -> None:
    name = unique("fraud")
    create(emulator, example("canary", name), progressing_status())
    other = yaml.safe_load(emulator.kubeconfig.read_text())
    other["contexts"][0]["context"]["namespace"] = "elsewhere"
    path = tmp_path / "kubeconfig-elsewhere"
    path.write_text(yaml.safe_dump(other))
    elsewhere = run_cli("status", name, "--no-wait", "--kubeconfig", str(path))
    assert elsewhere.returncode == 1 and 'in namespace "elsewhere" not found' in elsewhere.stderr
    flagged = run_cli("status", name, "--no-wait", "--kubeconfig", str(path), "-n", "default")
    assert flagged.returncode == 0, flagged.stderr
    # KUBECONFIG is read when the client library loads: a process of its own
    env = {**os.environ, "KUBECONFIG": str(emulator.kubeconfig)}
    from_env = subprocess.run(
        [str(PLUGIN), "status", name, "--no-wait"], capture_output=True, text=True, timeout=60, env=env
    )
    assert from_env.returncode == 0 and name in from_env.stdout


def test_runs_as_a_kubectl_plugin(emulator: Emulator) -> None:
    kubectl = require_binary("kubectl")
    name = unique("fraud")
    create(emulator, example("canary", name), progressing_status())
    env = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "KUBECONFIG": str(emulator.kubeconfig),
    }
    listed = subprocess.run([kubectl, "plugin", "list"], capture_output=True, text=True, timeout=60, env=env)
    assert str(PLUGIN) in listed.stdout
    result = subprocess.run(
        [kubectl, "mlrollouts", "status", name, "--no-wait"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    assert "Phase:      Progressing" in result.stdout
    paused = subprocess.run(
        [kubectl, "mlrollouts", "pause", name], capture_output=True, text=True, timeout=60, env=env
    )
    assert paused.returncode == 0, paused.stderr
    assert f"(resume with `kubectl mlrollouts resume {name}`)" in paused.stdout


def test_the_plugin_only_reads_and_patches(emulator: Emulator) -> None:
    """What a user's RBAC needs for the plugin: get/list on the three kinds and patch of ModelDeployments."""
    records = [
        r
        for r in emulator.audit_records()
        if r.get("userAgent", "").startswith("kubectl-mlrollouts/") and r.get("resource")
    ]
    assert records
    verbs = {(r["apiGroup"], r["verb"], r["resource"], r["subresource"]) for r in records}
    allowed = {(GROUP, v, p, "") for v in ("get", "list") for p in PLURALS.values()} | {
        (GROUP, "patch", "modeldeployments", ""),
        ("apps", "list", "deployments", ""),  # `get NAME`: the revision tree
        ("", "list", "pods", ""),
    }
    assert verbs <= allowed, verbs - allowed
