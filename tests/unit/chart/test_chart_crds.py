"""The chart ships exactly the generated CRDs, installs and upgrades them as templates (crds.install,
crds.keep), and every example validates against them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from chart_render import (
    CHART_DIR,
    CRD_FILES,
    REPO_ROOT,
    chart_crds,
    load_all,
    render,
    supported_versions,
    validate_official,
)

CRDS_DIR = REPO_ROOT / "crds"
EXAMPLES_DIR = REPO_ROOT / "examples"
KINDS = {"ModelDeployment": "mdep", "Experiment": "mlexp", "CompositeModel": "cmodel"}
OLDEST, NEWEST = supported_versions()


def generated() -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted(CRDS_DIR.glob("*.yaml"))}


def test_chart_crds_equal_the_generated_ones() -> None:
    source = generated()
    assert len(source) == 3, "crds/ should hold the three generated CRDs (make crds)"
    shipped = {p.name: p.read_text() for p in sorted(CRD_FILES.glob("*.yaml"))}
    assert shipped.keys() == source.keys(), "run `make crds`"
    for name, text in source.items():
        assert shipped[name] == text, (
            f"{CRD_FILES.relative_to(REPO_ROOT)}/{name} differs from crds/{name}: run `make crds`"
        )


def _without_release_metadata(crd: dict[str, Any]) -> dict[str, Any]:
    meta = crd["metadata"]
    return {**crd, "metadata": {"name": meta["name"], "labels": meta.get("labels")}}


def test_rendered_crds_are_the_generated_ones_with_release_metadata() -> None:
    rendered = {c["metadata"]["name"]: c for c in render().of_kind("CustomResourceDefinition")}
    source = {}
    for text in generated().values():
        (crd,) = load_all(text)
        source[crd["metadata"]["name"]] = crd
    assert rendered.keys() == source.keys()
    for name, crd in rendered.items():
        labels = crd["metadata"]["labels"]
        # the generated labels stay; Helm's own are added
        assert source[name]["metadata"]["labels"].items() <= labels.items(), name
        assert labels["app.kubernetes.io/managed-by"] == "Helm"
        assert labels["app.kubernetes.io/instance"] == "mlr"
        assert crd["metadata"]["annotations"] == {"helm.sh/resource-policy": "keep"}
        # everything but the metadata is the generated text, int64 bounds included
        assert {k: v for k, v in crd.items() if k != "metadata"} == {
            k: v for k, v in source[name].items() if k != "metadata"
        }, name
    assert "9223372036854775807" in render().manifests["mlrollouts/templates/crds.yaml"]


def test_crds_can_be_left_to_the_cluster_admin() -> None:
    rendered = render({"crds": {"install": False}})
    assert rendered.of_kind("CustomResourceDefinition") == []
    assert rendered.deployment  # the rest of the release is unchanged


def test_crds_go_with_the_release_unless_kept() -> None:
    crds = render({"crds": {"keep": False}}).of_kind("CustomResourceDefinition")
    assert len(crds) == 3
    assert all("annotations" not in c["metadata"] for c in crds)


def test_helm_installs_the_three_crds() -> None:
    crds = {c["spec"]["names"]["kind"]: c for c in chart_crds() if c["spec"]["group"] == "mlrollouts.io"}
    assert set(crds) == set(KINDS)
    for kind, short in KINDS.items():
        spec = crds[kind]["spec"]
        assert spec["scope"] == "Namespaced"
        assert short in spec["names"]["shortNames"]
        assert "mlrollouts" in spec["names"]["categories"]
        (version,) = spec["versions"]
        assert version["name"] == "v1alpha1" and version["served"] and version["storage"]
        assert version["subresources"]["status"] == {}
        columns = {c["name"] for c in version["additionalPrinterColumns"]}
        assert {"Phase", "Age"} <= columns, columns


# --- examples ----------------------------------------------------------------------------------------


def _schema(kind: str) -> dict[str, Any]:
    for crd in chart_crds():
        if crd["spec"]["names"]["kind"] == kind and crd["spec"]["group"] == "mlrollouts.io":
            return crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    raise KeyError(kind)


def _examples() -> list[tuple[str, dict[str, Any]]]:
    found = []
    for path in sorted(EXAMPLES_DIR.rglob("*.y*ml")):
        for index, doc in enumerate(load_all(path.read_text())):
            if isinstance(doc, dict) and "kind" in doc:
                found.append((f"{path.relative_to(REPO_ROOT)}#{index}", doc))
    return found


EXAMPLES = _examples()


def test_there_are_examples_of_every_kind() -> None:
    kinds = {doc["kind"] for _, doc in EXAMPLES}
    assert set(KINDS) <= kinds, kinds


@pytest.mark.parametrize(("where", "doc"), EXAMPLES, ids=[w for w, _ in EXAMPLES])
def test_example_validates(where: str, doc: dict[str, Any]) -> None:
    if doc["apiVersion"].startswith("mlrollouts.io/"):
        validator = jsonschema.Draft7Validator(_schema(doc["kind"]))
        errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path))
        assert not errors, "\n".join(
            f"{where}: {'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors
        )
    else:
        for version in (OLDEST, NEWEST):
            validate_official(doc, version)


def test_crd_schema_rejects_a_broken_example() -> None:
    where, doc = next((w, d) for w, d in EXAMPLES if d["kind"] == "ModelDeployment")
    broken = yaml.safe_load(yaml.safe_dump(doc))
    broken["spec"]["rollout"]["strategy"] = "Sideways"
    broken["spec"]["model"].pop("uri")
    errors = list(jsonschema.Draft7Validator(_schema("ModelDeployment")).iter_errors(broken))
    messages = " ".join(e.message for e in errors)
    assert "Sideways" in messages and "uri" in messages, where


def test_chart_dir_has_no_stray_crds() -> None:
    assert {p.name for p in CRD_FILES.iterdir()} == set(generated())
    # a crds/ directory is installed once and never upgraded, and would clash with the templates
    assert not (CHART_DIR / "crds").exists(), "the chart's CRDs belong in files/crds (make crds)"
    assert Path(CHART_DIR / "charts" / "kopf-peering" / "crds" / "kopf-peering.yaml").is_file()
