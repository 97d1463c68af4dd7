"""The CompositeModel's entry point: a router whose one route runs the graph.

Objects (all owned by the CompositeModel, labelled ``mlrollouts.io/owner: CompositeModel.<name>``),
built by the same router builders as every other entry point:

- Service ``<name>`` (clients call ``/v2/models/<name>/infer`` on it) and Deployment
  ``<name>-router`` running ``mlserving route --configmap <ns>/<name>-routes``;
- ConfigMap ``<name>-routes``: the route table with the graph; the router watches it and applies a
  new graph within a second, without a restart;
- Secret ``<name>-router-key``: the key every router replica signs response ids with;
- the router's ServiceAccount, Role (read its ConfigMap) and RoleBinding.
"""

from __future__ import annotations

from mlrollouts.api.kinds import COMPOSITE_MODEL
from mlrollouts.builders.common import DEFAULT_UPSTREAM_TEMPLATE, Owner
from mlrollouts.builders.router import router_service


def composite_owner(name: str, namespace: str, uid: str = "") -> Owner:
    return Owner(name=name, namespace=namespace, uid=uid, kind=COMPOSITE_MODEL.kind)


def composite_endpoint(owner: Owner, upstream_template: str = DEFAULT_UPSTREAM_TEMPLATE) -> str:
    """The graph's inference URL: the router Service as the operator reaches it, the composite's
    name as the model."""
    service = router_service(owner)["metadata"]["name"]
    base = upstream_template.format(service=service, namespace=owner.namespace)
    return f"{base}/v2/models/{owner.name}/infer"
