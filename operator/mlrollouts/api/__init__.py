"""API types of mlrollouts.io/v1alpha1: the one schema source for the CRDs.

Read a resource with ``parse_resource(obj)`` (or ``ModelDeployment.model_validate(obj)``), write it
back with ``to_json(model)`` (camelCase, unset optional fields left out).
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ValidationError

from mlrollouts.api.common import (
    QUERY_VARIABLES,
    Check,
    CheckTemplate,
    CustomResource,
    GatewayApiConfig,
    IngressNginxConfig,
    ObjectMeta,
    ParentRef,
    PrometheusConfig,
    QueryTemplateError,
    RouterConfig,
    Stickiness,
    TrafficProvider,
    fill_query,
    query_variables,
)
from mlrollouts.api.compositemodel import (
    Case,
    CaseOp,
    Combiner,
    CombinerType,
    CompositeModel,
    CompositeModelSpec,
    CompositeModelStatus,
    CompositePhase,
    CompositeTraffic,
    GraphNode,
    NodeStatus,
    NodeType,
    When,
)
from mlrollouts.api.experiment import (
    Decision,
    DecisionMethod,
    Experiment,
    ExperimentPhase,
    ExperimentSpec,
    ExperimentStatus,
    ExperimentTraffic,
    ExperimentTrafficProvider,
    GuardrailState,
    Interval,
    OnConclusion,
    Policy,
    PolicyType,
    Reward,
    RewardDistribution,
    RewardSource,
    Variant,
    VariantStatus,
    Winner,
)
from mlrollouts.api.kinds import (
    COMPOSITE_MODEL,
    EXPERIMENT,
    KINDS,
    MODEL_DEPLOYMENT,
    Resource,
    ResourceKind,
    kind_named,
)
from mlrollouts.api.modeldeployment import (
    Analysis,
    AnalysisRun,
    AnalysisStatus,
    ApprovalStep,
    Batching,
    EnvVar,
    FailureMode,
    Learning,
    LearningFeedback,
    LearningGuard,
    LearningStatus,
    LearningStorage,
    ModelDeployment,
    ModelDeploymentSpec,
    ModelDeploymentStatus,
    ModelFormat,
    ModelSource,
    OnInconclusive,
    Phase,
    ResourceRequirements,
    RevisionOutcome,
    RevisionRecord,
    RevisionWeight,
    Rollout,
    RolloutStep,
    Serving,
    ShadowStep,
    SnapshotRecord,
    Strategy,
    Traffic,
)
from mlrollouts.core.names import API_VERSION


def parse_resource(obj: dict[str, Any]) -> Resource:
    """Validate a manifest of any of the three kinds; raises `ValueError` / `ValidationError`."""
    if obj.get("apiVersion") != API_VERSION:
        raise ValueError(f"apiVersion: expected {API_VERSION}, got {obj.get('apiVersion')!r}")
    by_kind = {kind.kind: kind.model for kind in KINDS}
    kind = obj.get("kind")
    if not isinstance(kind, str) or kind not in by_kind:
        raise ValueError(f"kind: expected one of {', '.join(by_kind)}, got {kind!r}")
    return by_kind[kind].model_validate(obj)


def to_json(model: BaseModel) -> dict[str, Any]:
    """The wire form: camelCase keys, RFC 3339 timestamps, unset optional fields left out."""
    return model.model_dump(mode="json", by_alias=True, exclude_none=True)


_RELATIVE_PATH = re.compile(
    r"^([A-Za-z_]\w*(?:\[[\d*]+\])?(?:\.[A-Za-z_]\w*(?:\[[\d*]+\])?)*): (.*)$", re.DOTALL
)


def format_validation_error(exc: ValidationError) -> str:
    """One line per problem, each starting with the field path (``spec.rollout.steps[1].weight``).

    Cross-field rules report at the object that holds the fields and start their message with the
    path below it; that part is joined to the location.
    """
    lines = []
    for error in exc.errors():
        path = ""
        for part in error["loc"]:
            path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
        message = error["msg"].removeprefix("Value error, ")
        relative = _RELATIVE_PATH.match(message)
        if relative:
            path = f"{path}.{relative.group(1)}" if path else relative.group(1)
            message = relative.group(2)
        lines.append(f"{path or '<root>'}: {message}")
    return "\n".join(lines)


__all__ = [
    "COMPOSITE_MODEL",
    "EXPERIMENT",
    "KINDS",
    "MODEL_DEPLOYMENT",
    "QUERY_VARIABLES",
    "Analysis",
    "AnalysisRun",
    "AnalysisStatus",
    "ApprovalStep",
    "Batching",
    "Case",
    "CaseOp",
    "Check",
    "CheckTemplate",
    "Combiner",
    "CombinerType",
    "CompositeModel",
    "CompositeModelSpec",
    "CompositeModelStatus",
    "CompositePhase",
    "CompositeTraffic",
    "CustomResource",
    "Decision",
    "DecisionMethod",
    "EnvVar",
    "Experiment",
    "ExperimentPhase",
    "ExperimentSpec",
    "ExperimentStatus",
    "ExperimentTraffic",
    "ExperimentTrafficProvider",
    "FailureMode",
    "GatewayApiConfig",
    "GraphNode",
    "GuardrailState",
    "IngressNginxConfig",
    "Interval",
    "Learning",
    "LearningFeedback",
    "LearningGuard",
    "LearningStatus",
    "LearningStorage",
    "ModelDeployment",
    "ModelDeploymentSpec",
    "ModelDeploymentStatus",
    "ModelFormat",
    "ModelSource",
    "NodeStatus",
    "NodeType",
    "ObjectMeta",
    "OnConclusion",
    "OnInconclusive",
    "ParentRef",
    "Phase",
    "Policy",
    "PolicyType",
    "PrometheusConfig",
    "QueryTemplateError",
    "Resource",
    "ResourceKind",
    "ResourceRequirements",
    "RevisionOutcome",
    "RevisionRecord",
    "RevisionWeight",
    "Reward",
    "RewardDistribution",
    "RewardSource",
    "Rollout",
    "RolloutStep",
    "RouterConfig",
    "Serving",
    "ShadowStep",
    "SnapshotRecord",
    "Stickiness",
    "Strategy",
    "Traffic",
    "TrafficProvider",
    "Variant",
    "VariantStatus",
    "When",
    "Winner",
    "fill_query",
    "format_validation_error",
    "kind_named",
    "parse_resource",
    "query_variables",
    "to_json",
]
