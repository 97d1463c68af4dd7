"""Pure functions from a ModelDeployment's parameters to the Kubernetes objects that realise it."""

from mlrollouts.builders.common import Object, Owner, revision_name
from mlrollouts.builders.gateway import ParentRef, http_route
from mlrollouts.builders.ingress import canary_ingress, canary_ingress_name, stable_ingress
from mlrollouts.builders.learner import (
    LearnerSpec,
    learner_deployment,
    learner_name,
    learner_service,
    snapshot_key_secret,
    snapshot_key_secret_name,
)
from mlrollouts.builders.router import (
    route_configmap,
    route_table_configmap,
    route_table_name,
    router_deployment,
    router_name,
    router_objects,
    router_role,
    router_role_binding,
    router_service,
    router_service_account,
    signing_key_secret,
    signing_key_secret_name,
)
from mlrollouts.builders.serving import (
    ServingLearning,
    ServingRevision,
    all_revisions_service,
    serving_deployment,
    serving_service,
)

__all__ = [
    "LearnerSpec",
    "Object",
    "Owner",
    "ParentRef",
    "ServingLearning",
    "ServingRevision",
    "all_revisions_service",
    "canary_ingress",
    "canary_ingress_name",
    "http_route",
    "learner_deployment",
    "learner_name",
    "learner_service",
    "revision_name",
    "route_configmap",
    "route_table_configmap",
    "route_table_name",
    "router_deployment",
    "router_name",
    "router_objects",
    "router_role",
    "router_role_binding",
    "router_service",
    "router_service_account",
    "serving_deployment",
    "serving_service",
    "signing_key_secret",
    "signing_key_secret_name",
    "snapshot_key_secret",
    "snapshot_key_secret_name",
    "stable_ingress",
]
