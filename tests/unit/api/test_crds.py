"""The committed CRDs: in sync with the models, valid CustomResourceDefinitions for old and new
Kubernetes, structural, with the names, columns and cost bounds the API server needs."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import api_samples as manifests
import jsonschema
import kubernetes_validate
import pytest
import yaml
from api_server_checks import CRD_DIR, apply_defaults, server_side_errors, walk_rules

from mlrollouts.api import (
    AnalysisRun,
    AnalysisStatus,
    CompositeModel,
    CompositeModelStatus,
    Experiment,
    ExperimentStatus,
    Interval,
    LearningStatus,
    ModelDeployment,
    ModelDeploymentStatus,
    NodeStatus,
    RevisionRecord,
    RevisionWeight,
    SnapshotRecord,
    VariantStatus,
    Winner,
    parse_resource,
    to_json,
)
from mlrollouts.api import crd as crdgen
from mlrollouts.cli import main as cli
from mlrollouts.core.conditions import Condition, ConditionStatus

CRD_FILES = {
    "ModelDeployment": "modeldeployments.mlrollouts.io.yaml",
    "Experiment": "experiments.mlrollouts.io.yaml",
    "CompositeModel": "compositemodels.mlrollouts.io.yaml",
}
# the oldest release with CEL validation rules on by default, and recent ones
KUBERNETES_VERSIONS = ["1.25.0", "1.33.0", kubernetes_validate.latest_version()]


def load(kind: str) -> dict:
    return yaml.safe_load((CRD_DIR / CRD_FILES[kind]).read_text())


def schema_of(kind: str) -> dict:
    return load(kind)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def test_committed_crds_match_the_models():
    expected = crdgen.rendered_crds()
    assert sorted(expected) == sorted(CRD_FILES.values())
    on_disk = sorted(p.name for p in CRD_DIR.glob("*.yaml"))
    assert on_disk == sorted(expected), "crds/ has extra or missing files: run make crds"
    for name, text in expected.items():
        assert (CRD_DIR / name).read_text() == text, f"crds/{name} is out of date: run make crds"


def test_cli_writes_and_checks(tmp_path: Path, capsys):
    assert cli.main(["crds", "--output-dir", str(tmp_path)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(CRD_FILES.values())
    assert cli.main(["crds", "--check", "--output-dir", str(tmp_path)]) == 0
    stale = tmp_path / CRD_FILES["Experiment"]
    stale.write_text(stale.read_text().replace("mlexp", "exp"))
    capsys.readouterr()
    assert cli.main(["crds", "--check", "--output-dir", str(tmp_path)]) == 1
    assert "run make crds" in capsys.readouterr().err


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("kind", sorted(CRD_FILES))
def test_crd_passes_kubernetes_validate_strict(kind, version):
    kubernetes_validate.validate(load(kind), version, strict=True)


def test_kubernetes_validate_rejects_what_old_servers_refuse():
    """The validation above is real: `fieldPath` on a rule is unknown to Kubernetes 1.25."""
    crd = load("Experiment")
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    schema["x-kubernetes-validations"][0]["fieldPath"] = ".variants"
    with pytest.raises(kubernetes_validate.ValidationError, match="fieldPath"):
        kubernetes_validate.validate(crd, "1.25.0", strict=True)
    kubernetes_validate.validate(crd, "1.33.0", strict=True)


@pytest.mark.parametrize("kind", sorted(CRD_FILES))
def test_names_scope_and_subresources(kind):
    crd = load(kind)
    names = crd["spec"]["names"]
    assert crd["metadata"]["name"] == f"{names['plural']}.mlrollouts.io"
    assert crd["spec"]["group"] == "mlrollouts.io"
    assert crd["spec"]["scope"] == "Namespaced"
    assert names["kind"] == kind
    assert names["categories"] == ["mlrollouts"]
    assert (
        names["shortNames"]
        == {"ModelDeployment": ["mdep"], "Experiment": ["mlexp"], "CompositeModel": ["cmodel"]}[kind]
    )
    (version,) = crd["spec"]["versions"]
    assert version["name"] == "v1alpha1" and version["served"] and version["storage"]
    scale = {"specReplicasPath": ".spec.serving.replicas", "statusReplicasPath": ".status.replicas"}
    expected = {"ModelDeployment": {"scale": {**scale, "labelSelectorPath": ".status.selector"}}}
    assert version["subresources"] == {"status": {}, **expected.get(kind, {})}


@pytest.mark.parametrize(
    ("kind", "columns"),
    [
        ("ModelDeployment", {"Phase", "Stable", "Candidate", "Weights", "Age"}),
        ("Experiment", {"Phase", "Winner", "Age"}),
        ("CompositeModel", {"Phase", "Endpoint", "Age"}),
    ],
)
def test_printer_columns_point_into_the_schema(kind, columns):
    version = load(kind)["spec"]["versions"][0]
    printed = {c["name"]: c for c in version["additionalPrinterColumns"]}
    assert columns <= set(printed)
    schema = version["schema"]["openAPIV3Schema"]
    for column in printed.values():
        if column["jsonPath"].startswith(".metadata."):
            continue
        node = schema
        for part in column["jsonPath"].strip(".").split("."):
            assert part in node.get("properties", {}), f"{column['jsonPath']} is not in the schema"
            node = node["properties"][part]
        assert node["type"] == column["type"]


# --- structural schema ----------------------------------------------------------------------------

FORBIDDEN = {"$ref", "$defs", "definitions", "anyOf", "oneOf", "allOf", "not", "const", "title", "nullable"}


def structural_problems(node: dict, path: str) -> list[str]:
    """The rules of a structural schema (Kubernetes docs, 'Specifying a structural schema')."""
    problems = [f"{path}: {key}" for key in FORBIDDEN & set(node)]
    free = (
        node.get("x-kubernetes-preserve-unknown-fields") is True
        or node.get("x-kubernetes-int-or-string") is True
    )
    if "type" not in node and not free:
        problems.append(f"{path}: no type")
    if node.get("x-kubernetes-int-or-string") and "type" in node:
        problems.append(f"{path}: int-or-string with a type")
    if (
        "x-kubernetes-preserve-unknown-fields" in node
        and node["x-kubernetes-preserve-unknown-fields"] is not True
    ):
        problems.append(f"{path}: x-kubernetes-preserve-unknown-fields must be true")
    if "properties" in node and "additionalProperties" in node:
        problems.append(f"{path}: properties and additionalProperties together")
    if "properties" in node and node.get("type") != "object":
        problems.append(f"{path}: properties on a non-object")
    if node.get("type") == "array" and not isinstance(node.get("items"), dict):
        problems.append(f"{path}: an array needs one items schema")
    if "default" in node:
        try:
            jsonschema.Draft4Validator(node).validate(apply_defaults(node, node["default"]))
        except jsonschema.ValidationError as exc:
            problems.append(f"{path}: default does not validate: {exc.message}")
    for name, child in node.get("properties", {}).items():
        problems += structural_problems(child, f"{path}.{name}")
    if isinstance(node.get("items"), dict):
        problems += structural_problems(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        problems += structural_problems(node["additionalProperties"], f"{path}{{}}")
    return problems


@pytest.mark.parametrize("kind", sorted(CRD_FILES))
def test_schema_is_structural(kind):
    schema = schema_of(kind)
    assert structural_problems(schema, "") == []
    # metadata at the root: only `type: object` is allowed
    assert schema["properties"]["metadata"] == {"type": "object"}
    assert schema["required"] == ["spec"]


def test_structural_check_catches_non_structural_constructs():
    bad = {
        "type": "object",
        "properties": {
            "a": {"anyOf": [{"type": "string"}, {"type": "null"}]},
            "b": {"type": "object", "properties": {}, "additionalProperties": {"type": "string"}},
            "c": {"type": "integer", "minimum": 1, "default": 0},
            "d": {"properties": {}},
        },
    }
    problems = " ".join(structural_problems(bad, ""))
    for expected in (".a: anyOf", ".b: properties and additionalProperties", ".c: default", ".d: no type"):
        assert expected in problems


def test_generator_refuses_non_structural_models():
    from pydantic import BaseModel

    class Either(BaseModel):
        value: int | str

    with pytest.raises(crdgen.NonStructuralSchemaError, match="value"):
        crdgen.model_schema(Either)


@pytest.mark.parametrize("kind", sorted(CRD_FILES))
def test_spec_is_cost_bounded_for_cel(kind):
    """The API server estimates CEL cost from maxItems/maxLength; unbounded lists or strings in a
    spec with rules would make it refuse the CRD."""
    unbounded = []

    def walk(node: dict, path: str) -> None:
        if node.get("type") == "array" and "maxItems" not in node:
            unbounded.append(path)
        if node.get("type") == "string" and "maxLength" not in node and "enum" not in node:
            unbounded.append(path)
        for name, child in node.get("properties", {}).items():
            walk(child, f"{path}.{name}")
        if isinstance(node.get("items"), dict):
            walk(node["items"], f"{path}[]")
        if isinstance(node.get("additionalProperties"), dict):
            walk(node["additionalProperties"], f"{path}{{}}")

    walk(schema_of(kind)["properties"]["spec"], "spec")
    assert unbounded == []
    assert list(walk_rules(schema_of(kind))), "the CRD carries CEL rules"


def test_status_keeps_unknown_fields_and_has_no_defaults():
    for kind in CRD_FILES:
        status = schema_of(kind)["properties"]["status"]
        assert status["x-kubernetes-preserve-unknown-fields"] is True
        text = yaml.safe_dump(status)
        assert "\ndefault:" not in text and " default:" not in text


def test_object_defaults_let_nested_defaults_apply():
    spec = schema_of("Experiment")["properties"]["spec"]
    defaulted = apply_defaults(spec, {"variants": []})
    assert defaulted["policy"]["type"] == "Fixed"
    assert defaulted["traffic"]["provider"] == "Router"
    assert defaulted["interval"] == "1m"


@pytest.mark.parametrize("kind", sorted(CRD_FILES))
def test_every_spec_field_is_described_for_kubectl_explain(kind):
    undocumented = []

    def walk(node: dict, path: str) -> None:
        for name, child in node.get("properties", {}).items():
            if not child.get("description"):
                undocumented.append(f"{path}.{name}")
            walk(child, f"{path}.{name}")
        if isinstance(node.get("items"), dict):
            walk(node["items"], f"{path}[]")

    walk(schema_of(kind)["properties"]["spec"], "spec")
    assert undocumented == []


def test_status_written_by_the_models_validates_against_the_crds():
    """What the operator writes with `to_json` is what the CRD's status schema accepts."""
    now = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    ready = Condition(
        type="Ready",
        status=ConditionStatus.TRUE,
        reason="Healthy",
        message="ok",
        last_transition_time=now,
        observed_generation=3,
    )
    statuses = {
        ModelDeployment: ModelDeploymentStatus(
            phase="Progressing",
            observed_generation=3,
            stable_revision="a1b2c3",
            candidate_revision="d4e5f6",
            current_step=1,
            step_started_at=now,
            rollout_started_at=now,
            weights=[
                RevisionWeight(revision="a1b2c3", desired=90, verified=90),
                RevisionWeight(revision="d4e5f6", desired=10, shadow=0),
            ],
            weights_summary="a1b2c3:90 d4e5f6:10",
            analysis=AnalysisStatus(
                runs=[
                    AnalysisRun(
                        time=now,
                        check="errors",
                        verdict="Inconclusive",
                        value=None,
                        samples=3,
                        message="too few requests",
                    )
                ],
                inconclusive_count=1,
                last_run_at=now,
            ),
            revisions=[RevisionRecord(revision="a1b2c3", created_at=now, outcome="Serving")],
            conditions=[ready],
            learning=LearningStatus(
                latest_snapshot=4,
                last_good_snapshot=3,
                snapshots=[SnapshotRecord(version=4, parent=3, metrics={"accuracy": 0.91})],
            ),
        ),
        Experiment: ExperimentStatus(
            phase="Concluded",
            variants=[
                VariantStatus(
                    name="a",
                    requests=100,
                    reward_count=100,
                    reward_sum=12.5,
                    mean=0.125,
                    interval=Interval(low=0.07, high=0.2),
                    probability_to_be_best=0.97,
                    weight=100,
                    guardrail="Ok",
                )
            ],
            winner=Winner(
                variant="a",
                reason="probability to be best 0.97 >= 0.95",
                evidence={"probabilityToBeBest": 0.97},
                decided_at=now,
            ),
            started_at=now,
            conditions=[ready],
        ),
        CompositeModel: CompositeModelStatus(
            phase="Ready",
            endpoint="http://g.default.svc:8080",
            nodes=[NodeStatus(name="x", ready=True)],
            conditions=[ready],
        ),
    }
    for sample in manifests.valid()[:3]:
        resource = parse_resource(sample.document)
        with_status = resource.model_copy(update={"status": statuses[type(resource)]})
        wire = to_json(with_status)
        assert wire["status"]["conditions"][0]["lastTransitionTime"] == "2026-01-02T03:04:05Z"
        assert server_side_errors(wire) == []
        assert parse_resource(wire) == with_status
        wire["status"]["phase"] = "Exploded"
        assert any("status.phase" in p for p in server_side_errors(wire))
