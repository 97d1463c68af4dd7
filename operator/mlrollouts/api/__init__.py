"""API types of mlrollouts.io/v1alpha1: the one schema source for the CRDs.

Read a resource with ``parse_resource(obj)`` (or ``ModelDeployment.model_validate(obj)``), write it
back with ``to_json(model)`` (camelCase, unset optional fields left out).
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ValidationError

from mlrollouts.api.common import (
    API_VERSION,
    CATEGORY,
    GROUP,
    QUERY_VARIABLES,
    VERSION,
    Check,
    CheckTemplate,
    Condition,
    ConditionStatus,
    GatewayApiConfig,
    IngressNginxConfig,
    ObjectMeta,
    ParentRef,
    PrometheusConfig,
    RouterConfig,
    Stickiness,
    TrafficProvider,
    format_duration,
    parse_duration,
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
    Verdict,
)

Resource = ModelDeployment | Experiment | CompositeModel

KINDS: dict[str, type[ModelDeployment] | type[Experiment] | type[CompositeModel]] = {
    "ModelDeployment": ModelDeployment,
    "Experiment": Experiment,
    "CompositeModel": CompositeModel,
}


def parse_resource(obj: dict[str, Any]) -> Resource:
    """Validate a manifest of any of the three kinds; raises `ValueError` / `ValidationError`."""
    if obj.get("apiVersion") != API_VERSION:
        raise ValueError(f"apiVersion: expected {API_VERSION}, got {obj.get('apiVersion')!r}")
    kind = obj.get("kind")
    if not isinstance(kind, str) or kind not in KINDS:
        raise ValueError(f"kind: expected one of {', '.join(KINDS)}, got {kind!r}")
    return KINDS[kind].model_validate(obj)


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
    "API_VERSION",
    "CATEGORY",
    "GROUP",
    "KINDS",
    "QUERY_VARIABLES",
    "VERSION",
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
    "Condition",
    "ConditionStatus",
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
    "Resource",
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
    "Verdict",
    "When",
    "Winner",
    "format_duration",
    "format_validation_error",
    "parse_duration",
    "parse_resource",
    "query_variables",
    "to_json",
]
