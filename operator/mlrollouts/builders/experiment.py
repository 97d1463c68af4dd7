"""The Experiment's entry point: a router with one route whose variants are the ModelDeployments.

Objects (all owned by the Experiment, labelled ``mlrollouts.io/owner: Experiment.<name>``):

- Service ``<name>`` (clients call ``/v2/models/<name>/infer`` on it) and Deployment
  ``<name>-router`` running ``mlserving route --configmap <ns>/<name>-routes``;
- ConfigMap ``<name>-routes``: the route table; each variant's upstream is the stable revision
  Service of its ModelDeployment, and the request is forwarded under that model's own name;
- Secret ``<name>-router-key``: the key every router replica signs response ids with, so feedback
  sent to any replica is credited to the variant that answered;
- the router's ServiceAccount, Role (read its ConfigMap) and RoleBinding.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from mlrollouts.api.kinds import EXPERIMENT
from mlrollouts.builders.common import DEFAULT_UPSTREAM_TEMPLATE, Owner, revision_name
from mlserving.router.table import Route, RouteTable, Stickiness, Variant


def experiment_owner(name: str, namespace: str, uid: str = "") -> Owner:
    return Owner(name=name, namespace=namespace, uid=uid, kind=EXPERIMENT.kind)


@dataclass(frozen=True)
class Arm:
    """One variant of the route: the ModelDeployment revision that serves it and its weight."""

    variant: str
    model_deployment: str
    revision: str
    model: str
    weight: int

    @property
    def service(self) -> str:
        return revision_name(self.model_deployment, self.revision)


def experiment_route_table(
    owner: Owner,
    arms: Sequence[Arm],
    *,
    stickiness_header: str | None = None,
    stickiness_cookie: str | None = None,
    upstream_template: str = DEFAULT_UPSTREAM_TEMPLATE,
) -> RouteTable:
    """The route ``<name>`` (model ``<name>``) over the arms; raises ``RouteTableError``/``ValueError``
    naming the field when the table would be invalid (e.g. every weight 0)."""
    variants = [
        Variant(
            name=arm.variant,
            upstreams=[upstream_template.format(service=arm.service, namespace=owner.namespace)],
            weight=arm.weight,
            model=arm.model,
        )
        for arm in arms
    ]
    sticky = None
    if stickiness_header or stickiness_cookie:
        sticky = Stickiness(header=stickiness_header, cookie=stickiness_cookie)
    return RouteTable(routes=[Route(name=owner.name, model=owner.name, variants=variants, stickiness=sticky)])
