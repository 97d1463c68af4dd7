"""Kind metadata: one description per kind, the one the CRDs, the operator and kubectl use."""

from __future__ import annotations

import pytest

from mlrollouts.api import (
    COMPOSITE_MODEL,
    EXPERIMENT,
    KINDS,
    MODEL_DEPLOYMENT,
    CompositeModel,
    Experiment,
    ModelDeployment,
    kind_named,
    parse_resource,
)
from mlrollouts.api.crd import all_crds


def test_each_kind_once_with_its_model():
    assert KINDS == (MODEL_DEPLOYMENT, EXPERIMENT, COMPOSITE_MODEL)
    assert [k.model for k in KINDS] == [ModelDeployment, Experiment, CompositeModel]
    assert [(k.plural, k.short_names) for k in KINDS] == [
        ("modeldeployments", ("mdep",)),
        ("experiments", ("mlexp",)),
        ("compositemodels", ("cmodel",)),
    ]
    for kind in KINDS:
        assert kind.model.model_fields["kind"].default == kind.kind
        assert kind.api_version == "mlrollouts.io/v1alpha1" == f"{kind.group}/{kind.version}"
        assert kind.categories == ("mlrollouts",)


def test_the_crds_are_named_from_the_kinds():
    by_kind = {crd["spec"]["names"]["kind"]: crd for crd in all_crds()}
    for kind in KINDS:
        crd = by_kind[kind.kind]
        assert crd["metadata"]["name"] == kind.crd_name == f"{kind.plural}.mlrollouts.io"
        assert crd["spec"]["group"] == kind.group
        assert crd["spec"]["versions"][0]["name"] == kind.version
        assert crd["spec"]["names"] == {
            "kind": kind.kind,
            "listKind": kind.list_kind,
            "plural": kind.plural,
            "singular": kind.singular,
            "shortNames": list(kind.short_names),
            "categories": list(kind.categories),
        }
        description = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["description"]
        # kubectl explain shows which apiVersion to write: the answer to a wrong one names no version
        assert (
            description
            == f"{kind.description} Served versions: apiVersion {kind.api_version} (the only one)."
        )


@pytest.mark.parametrize(
    "name",
    ["ModelDeployment", "modeldeployment", "modeldeployments", "MDEP", "modeldeployments.mlrollouts.io"],
)
def test_kind_named_takes_every_name_kubectl_takes(name):
    assert kind_named(name) is MODEL_DEPLOYMENT


def test_unknown_kind_lists_the_known_ones():
    with pytest.raises(ValueError, match=r"unknown kind 'rollout'; use one of ModelDeployment \(mdep\), "):
        kind_named("rollout")


def test_parse_resource_takes_only_the_kind_itself():
    body = {"apiVersion": "mlrollouts.io/v1alpha1", "spec": {"variants": []}}
    with pytest.raises(ValueError, match="kind: expected one of ModelDeployment, Experiment, CompositeModel"):
        parse_resource({**body, "kind": "mlexp"})
