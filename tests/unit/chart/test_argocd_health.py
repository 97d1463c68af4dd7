"""The Argo CD health check (Lua) run by a real Lua interpreter against statuses of every phase."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import lupa.lua54 as lupa
import pytest
import yaml

from mlrollouts.api.compositemodel import CompositeModelStatus, CompositePhase
from mlrollouts.api.experiment import ExperimentPhase, ExperimentStatus, VariantStatus, Winner
from mlrollouts.api.modeldeployment import ModelDeploymentStatus, Phase, RevisionWeight
from mlrollouts.core.conditions import Condition, ConditionStatus

REPO_ROOT = Path(__file__).resolve().parents[3]
ARGOCD_DIR = REPO_ROOT / "charts" / "mlrollouts" / "files" / "argocd"
SCRIPT = (ARGOCD_DIR / "health.lua").read_text()
KINDS = ("ModelDeployment", "Experiment", "CompositeModel")
ARGO_STATUSES = {"Healthy", "Progressing", "Degraded", "Suspended", "Missing", "Unknown"}
NOW = datetime(2026, 1, 1, tzinfo=UTC)

# Argo CD runs the script in gopher-lua with these libraries (no io, os, require, load).
_SANDBOX = """
local script, obj = ...
local env = {
  obj = obj, ipairs = ipairs, pairs = pairs, next = next, tostring = tostring, tonumber = tonumber,
  type = type, error = error, pcall = pcall, select = select, unpack = table.unpack,
  table = table, string = string, math = math,
}
local chunk, err = load(script, "health.lua", "t", env)
if chunk == nil then error(err) end
return chunk()
"""


def health(obj: dict[str, Any]) -> tuple[str, str]:
    lua = lupa.LuaRuntime(unpack_returned_tuples=True)
    run = lua.execute("return function(...) " + _SANDBOX + " end")
    result = run(SCRIPT, lua.table_from(obj, recursive=True))
    return result["status"], result["message"] or ""


def resource(kind: str, status: Any | None, generation: int = 3) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "apiVersion": "mlrollouts.io/v1alpha1",
        "kind": kind,
        "metadata": {"name": "fraud", "namespace": "models", "generation": generation},
        "spec": {},
    }
    if status is not None:
        obj["status"] = status.model_dump(by_alias=True, mode="json", exclude_none=True)
    return obj


def conditions(phase: str) -> list[Condition]:
    ready = phase in ("Healthy", "Ready", "Concluded")
    return [
        Condition(
            type="Ready",
            status=ConditionStatus.TRUE if ready else ConditionStatus.FALSE,
            reason=phase,
            last_transition_time=NOW,
            observed_generation=3,
        ),
        Condition(
            type="Degraded",
            status=ConditionStatus.TRUE if phase == "Degraded" else ConditionStatus.FALSE,
            reason="RolledBack" if phase == "Degraded" else "AsExpected",
            message="error-rate above 0.05",
            last_transition_time=NOW,
            observed_generation=3,
        ),
    ]


EXPECTED = {
    ("ModelDeployment", "Pending"): "Progressing",
    ("ModelDeployment", "Progressing"): "Progressing",
    ("ModelDeployment", "Paused"): "Suspended",
    ("ModelDeployment", "Healthy"): "Healthy",
    ("ModelDeployment", "Degraded"): "Degraded",
    ("Experiment", "Pending"): "Progressing",
    ("Experiment", "Running"): "Progressing",
    ("Experiment", "Concluded"): "Healthy",
    ("Experiment", "Stopped"): "Suspended",
    ("Experiment", "Degraded"): "Degraded",
    ("CompositeModel", "Pending"): "Progressing",
    ("CompositeModel", "Ready"): "Healthy",
    ("CompositeModel", "Degraded"): "Degraded",
}


def sample(kind: str, phase: str) -> Any:
    if kind == "ModelDeployment":
        return ModelDeploymentStatus(
            phase=Phase(phase),
            observed_generation=3,
            stable_revision="a1b2c3",
            candidate_revision="d4e5f6" if phase in ("Progressing", "Paused") else None,
            current_step=1 if phase in ("Progressing", "Paused") else None,
            weights=[
                RevisionWeight(revision="a1b2c3", desired=90),
                RevisionWeight(revision="d4e5f6", desired=10),
            ],
            weights_summary="a1b2c3:90 d4e5f6:10",
            conditions=conditions(phase),
            message=f"rollout {phase.lower()}",
        )
    if kind == "Experiment":
        return ExperimentStatus(
            phase=ExperimentPhase(phase),
            observed_generation=3,
            variants=[VariantStatus(name="a", weight=50), VariantStatus(name="b", weight=50)],
            winner=Winner(variant="b", reason="probability to be best 0.97")
            if phase == "Concluded"
            else None,
            conditions=conditions(phase),
        )
    return CompositeModelStatus(
        phase=CompositePhase(phase),
        observed_generation=3,
        endpoint="http://fraud.models",
        conditions=conditions(phase),
    )


def test_every_phase_of_every_kind_is_covered() -> None:
    phases = {
        "ModelDeployment": {p.value for p in Phase},
        "Experiment": {p.value for p in ExperimentPhase},
        "CompositeModel": {p.value for p in CompositePhase},
    }
    assert {(k, p) for k, ps in phases.items() for p in ps} == set(EXPECTED)


@pytest.mark.parametrize(("kind", "phase"), sorted(EXPECTED), ids=[f"{k}-{p}" for k, p in sorted(EXPECTED)])
def test_phase_maps_to_argo_health(kind: str, phase: str) -> None:
    status, message = health(resource(kind, sample(kind, phase)))
    assert status == EXPECTED[(kind, phase)]
    assert status in ARGO_STATUSES
    assert message


def test_message_shows_step_and_weights() -> None:
    status, message = health(resource("ModelDeployment", sample("ModelDeployment", "Progressing")))
    assert status == "Progressing"
    assert message == "rollout progressing; step 1; weights a1b2c3:90 d4e5f6:10"


def test_a_resource_without_status_is_progressing() -> None:
    assert health(resource("ModelDeployment", None)) == ("Progressing", "Waiting for the operator")


def test_status_of_an_older_generation_is_not_trusted() -> None:
    obj = resource("ModelDeployment", sample("ModelDeployment", "Healthy"), generation=4)
    status, message = health(obj)
    assert status == "Progressing"
    assert "generation 4" in message


def test_a_true_degraded_condition_wins_over_the_phase() -> None:
    status_obj = sample("ModelDeployment", "Progressing")
    status_obj.conditions[1] = Condition(
        type="Degraded",
        status=ConditionStatus.TRUE,
        reason="AnalysisFailed",
        message="latency-p99 above 0.2s",
        observed_generation=3,
    )
    status_obj.message = None
    assert health(resource("ModelDeployment", status_obj)) == (
        "Degraded",
        "latency-p99 above 0.2s; step 1; weights a1b2c3:90 d4e5f6:10",
    )


def test_an_unknown_phase_falls_back_to_the_ready_condition() -> None:
    obj = resource("CompositeModel", sample("CompositeModel", "Ready"))
    obj["status"]["phase"] = "Reconfiguring"
    assert health(obj)[0] == "Healthy"
    obj["status"]["conditions"] = []
    status, message = health(obj)
    assert status == "Progressing"
    assert "Reconfiguring" in message


def test_script_avoids_lua_5_2_and_later_syntax() -> None:
    """Argo CD runs gopher-lua (Lua 5.1): no goto, integer division, bit operators or attributes."""
    code = "\n".join(line.split("--", 1)[0] for line in SCRIPT.splitlines())
    code = re.sub(r'"[^"]*"', '""', code)
    for pattern in (r"\bgoto\b", r"//", r"<const>", r"<close>", r"[&|]", r"~[^=]", r"<<|>>"):
        assert not re.search(pattern, code), pattern


def test_argocd_cm_patch_carries_the_script_for_each_kind() -> None:
    patch = yaml.safe_load((ARGOCD_DIR / "argocd-cm-patch.yaml").read_text())
    assert set(patch["data"]) == {f"resource.customizations.health.mlrollouts.io_{k}" for k in KINDS}
    for script in patch["data"].values():
        assert script == SCRIPT


@pytest.mark.parametrize("doc", ["charts/mlrollouts/README.md", "docs/install.md"])
def test_docs_show_the_argocd_snippet_with_the_same_script(doc: str) -> None:
    text = (REPO_ROOT / doc).read_text()
    blocks = [yaml.safe_load(b) for b in re.findall(r"```yaml\n(.*?)```", text, flags=re.DOTALL)]
    snippets = [b for b in blocks if isinstance(b, dict) and b.get("metadata", {}).get("name") == "argocd-cm"]
    assert snippets, f"{doc}: no argocd-cm snippet"
    data = snippets[0]["data"]
    assert data["resource.customizations.health.mlrollouts.io_ModelDeployment"] == SCRIPT
    for kind in KINDS:
        assert f"resource.customizations.health.mlrollouts.io_{kind}" in text
