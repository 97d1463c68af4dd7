"""`kubectl mlrollouts` commands as real processes against the API emulator, itself a real process.

The emulator is started with its CLI, the generated CRDs are applied, sample objects are created and
their status is written through the /status subresource, the way the operator writes it.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
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
        for d in yaml.safe_load_all(next((REPO_ROOT / "examples" / kind_dir).glob("*.yaml")).read_text())
        if d
    ]
    doc["metadata"] = {"name": name, "namespace": "default"}
    return doc


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
    body = {"status": status.model_dump(by_alias=True, mode="json", exclude_none=True)}
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


# --- status --------------------------------------------------------------------------------------------


def test_status_shows_phase_step_weights_and_recent_checks(emulator: Emulator) -> None:
    name = unique("fraud")
    create(emulator, example("canary", name), progressing_status())
    out = ok(emulator, "status", name)
    assert f"ModelDeployment default/{name}" in out
    assert "Phase:      Progressing  (canary at 10 %)" in out
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


# --- actions -----------------------------------------------------------------------------------------


def test_actions_set_the_annotation_and_refuse_to_trample_a_pending_one(emulator: Emulator) -> None:
    name = unique("fraud")
    create(emulator, example("canary", name), progressing_status())
    assert "promote requested (phase Progressing)" in ok(emulator, "promote", name)
    assert read(emulator, name)["metadata"]["annotations"][ACTION] == "promote"

    refused = run_plugin(emulator, "abort", name)
    assert refused.returncode == 1
    assert "'promote' is still pending" in refused.stderr and "--force" in refused.stderr
    assert read(emulator, name)["metadata"]["annotations"][ACTION] == "promote"

    ok(emulator, "abort", name, "--force")
    assert read(emulator, name)["metadata"]["annotations"][ACTION] == "abort"

    # the operator carries the action out and removes the annotation; the next one goes through
    emulator.custom.patch_namespaced_custom_object(
        GROUP, VERSION, "default", "modeldeployments", name, {"metadata": {"annotations": {ACTION: None}}}
    )
    ok(emulator, "retry", f"mdep/{name}")
    obj = read(emulator, name)
    assert obj["metadata"]["annotations"][ACTION] == "retry"
    assert obj["metadata"]["generation"] == 1  # annotations never touch the spec


def test_pause_sets_the_spec_field_and_resume_clears_it(emulator: Emulator) -> None:
    name = unique("fraud")
    create(emulator, example("canary", name), progressing_status())
    ok(emulator, "pause", name)
    obj = read(emulator, name)
    assert obj["spec"]["rollout"]["paused"] is True
    assert obj["metadata"]["generation"] == 2
    assert ACTION not in (obj["metadata"].get("annotations") or {})
    assert "already paused" in ok(emulator, "pause", name)
    assert "(paused by spec.rollout.paused)" in ok(emulator, "status", name)

    out = ok(emulator, "resume", name)
    assert "spec.rollout.paused=false and resume requested" in out
    obj = read(emulator, name)
    assert obj["spec"]["rollout"]["paused"] is False
    assert obj["metadata"]["annotations"][ACTION] == "resume"
    # the rest of the spec is untouched
    assert obj["spec"]["rollout"]["steps"] == example("canary", name)["spec"]["rollout"]["steps"]


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

    bad_kind = run_plugin(emulator, "get", "pods")
    assert bad_kind.returncode == 1 and "unknown kind 'pods'" in bad_kind.stderr

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
    elsewhere = run_cli("status", name, "--kubeconfig", str(path))
    assert elsewhere.returncode == 1 and 'in namespace "elsewhere" not found' in elsewhere.stderr
    flagged = run_cli("status", name, "--kubeconfig", str(path), "-n", "default")
    assert flagged.returncode == 0, flagged.stderr
    # KUBECONFIG is read when the client library loads: a process of its own
    env = {**os.environ, "KUBECONFIG": str(emulator.kubeconfig)}
    from_env = subprocess.run(
        [str(PLUGIN), "status", name], capture_output=True, text=True, timeout=60, env=env
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
        [kubectl, "mlrollouts", "status", name], capture_output=True, text=True, timeout=60, env=env
    )
    assert result.returncode == 0, result.stderr
    assert "Phase:      Progressing" in result.stdout


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
        (GROUP, "patch", "modeldeployments", "")
    }
    assert verbs <= allowed, verbs - allowed
