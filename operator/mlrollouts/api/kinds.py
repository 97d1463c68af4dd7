"""The kinds of the API as the API server, kubectl and the operator know them: names, short names,
categories and the models that hold their schema."""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel

from mlrollouts.api.compositemodel import CompositeModel, CompositeModelSpec, CompositeModelStatus
from mlrollouts.api.experiment import Experiment, ExperimentSpec, ExperimentStatus
from mlrollouts.api.modeldeployment import ModelDeployment, ModelDeploymentSpec, ModelDeploymentStatus
from mlrollouts.core.names import API_VERSION, CATEGORY

Resource = ModelDeployment | Experiment | CompositeModel


@dataclass(frozen=True)
class ResourceKind:
    kind: str
    plural: str
    short_names: tuple[str, ...]
    model: type[Resource]
    spec: type[BaseModel]
    status: type[BaseModel]
    categories: tuple[str, ...] = (CATEGORY,)
    api_version: str = API_VERSION

    @property
    def group(self) -> str:
        return self.api_version.split("/")[0]

    @property
    def version(self) -> str:
        return self.api_version.split("/")[1]

    @property
    def singular(self) -> str:
        return self.kind.lower()

    @property
    def list_kind(self) -> str:
        return f"{self.kind}List"

    @property
    def crd_name(self) -> str:
        """``<plural>.<group>``: the CRD's name, which kubectl also takes as the resource's name."""
        return f"{self.plural}.{self.group}"

    @property
    def names(self) -> frozenset[str]:
        """Every name kubectl accepts for the kind: singular, plural, short names, ``plural.group``."""
        return frozenset({self.singular, self.plural, *self.short_names, self.crd_name})

    @property
    def description(self) -> str:
        return (self.model.__doc__ or "").strip()


MODEL_DEPLOYMENT = ResourceKind(
    "ModelDeployment",
    "modeldeployments",
    ("mdep",),
    ModelDeployment,
    ModelDeploymentSpec,
    ModelDeploymentStatus,
)
EXPERIMENT = ResourceKind(
    "Experiment", "experiments", ("mlexp",), Experiment, ExperimentSpec, ExperimentStatus
)
COMPOSITE_MODEL = ResourceKind(
    "CompositeModel", "compositemodels", ("cmodel",), CompositeModel, CompositeModelSpec, CompositeModelStatus
)
KINDS: tuple[ResourceKind, ...] = (MODEL_DEPLOYMENT, EXPERIMENT, COMPOSITE_MODEL)


def kind_named(text: str) -> ResourceKind:
    """The kind called ``text`` by its Kind (``ModelDeployment``) or any name kubectl accepts."""
    for kind in KINDS:
        if text == kind.kind or text.lower() in kind.names:
            return kind
    known = ", ".join(f"{k.kind} ({', '.join(k.short_names)})" for k in KINDS)
    raise ValueError(f"unknown kind {text!r}; use one of {known}")
