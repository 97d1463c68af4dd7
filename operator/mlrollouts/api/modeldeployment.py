"""`ModelDeployment`: one served model, rolled out revision by revision."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, model_validator

from mlrollouts.api.common import (
    GATEWAY_API_RULE,
    MIN_BELOW_MAX_RULE,
    ApiModel,
    Checks,
    CustomResource,
    Duration,
    GatewayApiSection,
    IngressNginxSection,
    Name,
    PrometheusConfig,
    Quantity,
    RouterConfig,
    StatusModel,
    TrafficProvider,
    cel,
    check_gateway_api,
    check_min_below_max,
    check_unique_names,
    validations,
)
from mlrollouts.core.conditions import Condition
from mlrollouts.core.verdicts import Verdict

MAX_STEPS = 32


# --- spec: model and serving ----------------------------------------------------------------------


class ModelFormat(StrEnum):
    AUTO = "auto"
    ONNX = "onnx"
    SKLEARN = "sklearn"


class ModelSource(ApiModel):
    """The model artefact a revision serves."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            cel(
                "!has(self.allowUnsafePickle) || !self.allowUnsafePickle || self.format != 'onnx'",
                "allowUnsafePickle applies only to sklearn models",
                field="allowUnsafePickle",
            )
        )
    )

    name: Name | None = Field(default=None, description="served model name; default: the resource name")
    uri: str = Field(min_length=1, max_length=2048, description="file://, http(s):// or s3:// location")
    format: ModelFormat = ModelFormat.AUTO
    """auto (from the file name), onnx or sklearn."""
    version: str | None = Field(default=None, max_length=128)
    """Model version, shown in status and metrics."""
    sha256: str | None = Field(
        default=None,
        max_length=64,
        pattern=r"^[a-f0-9]{64}$",
        description="expected SHA-256 of the model file",
    )
    allow_unsafe_pickle: bool = Field(
        default=False, description="allow joblib/pickle files; they can run arbitrary code when loaded"
    )

    @model_validator(mode="after")
    def _pickle(self) -> ModelSource:
        if self.allow_unsafe_pickle and self.format == ModelFormat.ONNX:
            raise ValueError("allowUnsafePickle: applies only to sklearn models")
        return self


class ResourceRequirements(ApiModel):
    requests: dict[str, Quantity] = Field(default_factory=dict)
    """Resource requests of each serving container (e.g. cpu: 500m)."""
    limits: dict[str, Quantity] = Field(default_factory=dict)
    """Resource limits of each serving container."""


class EnvVar(ApiModel):
    name: str = Field(min_length=1, max_length=256, pattern=r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
    """Variable name."""
    value: str = Field(default="", max_length=32768)
    """Variable value."""


class Batching(ApiModel):
    """Server-side dynamic batching."""

    max_batch_size: int = Field(default=32, ge=1, le=4096)
    """Most requests in one batch."""
    max_wait: Duration = Field(default="5ms", description="longest a request waits for a batch to fill")


class Serving(ApiModel):
    """How each revision runs."""

    image: str | None = Field(
        default=None, max_length=1024, description="default: the operator's serving image"
    )
    replicas: int = Field(default=1, ge=0, le=1000)
    """Serving pods per revision."""
    resources: ResourceRequirements = Field(default_factory=ResourceRequirements)
    """CPU and memory of each serving container."""
    env: list[EnvVar] = Field(default_factory=list, max_length=128)
    """Extra environment variables."""
    args: list[Annotated[str, Field(max_length=4096)]] = Field(default_factory=list, max_length=128)
    """Extra arguments to the serving command."""
    port: int = Field(default=8080, ge=1, le=65535)
    """HTTP port of the model server."""
    batching: Batching | None = None


# --- spec: traffic --------------------------------------------------------------------------------


class Traffic(ApiModel):
    """How traffic reaches the revisions."""

    model_config = ConfigDict(json_schema_extra=validations(GATEWAY_API_RULE))

    provider: TrafficProvider = TrafficProvider.ROUTER
    """Router (exact weights, shadow, stickiness), GatewayAPI, IngressNginx or Service (replica-proportional)."""
    router: RouterConfig = Field(default_factory=RouterConfig)
    """The router in front of the revisions (provider Router)."""
    gateway_api: GatewayApiSection = None
    ingress_nginx: IngressNginxSection = None

    @model_validator(mode="after")
    def _provider_config(self) -> Traffic:
        check_gateway_api(self.provider, self.gateway_api)
        return self


# --- spec: rollout ----------------------------------------------------------------------------------


class Strategy(StrEnum):
    CANARY = "Canary"
    BLUE_GREEN = "BlueGreen"
    IMMEDIATE = "Immediate"


class ShadowStep(ApiModel):
    """Mirror a share of live traffic to the candidate; its answers are compared, never returned."""

    percent: int = Field(ge=1, le=100)
    """Percent of requests mirrored."""
    duration: Duration
    """How long to mirror."""


class ApprovalStep(ApiModel):
    """Wait for `mlrollouts promote`."""

    message: str | None = Field(default=None, max_length=1024)
    """Shown while the rollout waits."""


class RolloutStep(ApiModel):
    """One step: exactly one of `shadow`, `weight` (with an optional `duration`) or `approval`."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            cel(
                "(has(self.shadow) ? 1 : 0) + (has(self.weight) ? 1 : 0) + (has(self.approval) ? 1 : 0) == 1",
                "a step needs exactly one of shadow, weight or approval",
            ),
            cel(
                "!has(self.duration) || has(self.weight)",
                "duration belongs to a weight step (a shadow step has its own duration)",
                field="duration",
            ),
        )
    )

    shadow: ShadowStep | None = None
    weight: int | None = Field(default=None, ge=0, le=100, description="percent of traffic to the candidate")
    duration: Duration | None = Field(default=None, description="how long to hold this weight")
    approval: ApprovalStep | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> RolloutStep:
        kinds = [
            k
            for k, v in (("shadow", self.shadow), ("weight", self.weight), ("approval", self.approval))
            if v is not None
        ]
        if len(kinds) != 1:
            found = ", ".join(kinds) if kinds else "none"
            raise ValueError(f"a step needs exactly one of shadow, weight or approval (found: {found})")
        if self.duration is not None and self.weight is None:
            raise ValueError("duration belongs to a weight step (a shadow step has its own duration)")
        return self


class FailureMode(StrEnum):
    CONSECUTIVE = "Consecutive"
    TOTAL = "Total"


class OnInconclusive(StrEnum):
    HOLD = "Hold"
    ROLLBACK = "Rollback"


class Analysis(ApiModel):
    """Metric checks run every `interval` while a candidate gets traffic."""

    interval: Duration = "1m"
    """How often the checks run."""
    failure_limit: int = Field(default=2, ge=1, le=1000, description="failed analysis runs that roll back")
    failure_mode: FailureMode = Field(
        default=FailureMode.CONSECUTIVE,
        description="count failures in a row (Consecutive) or in total (Total)",
    )
    inconclusive_limit: int = Field(default=3, ge=1, le=1000)
    """Inconclusive runs in a row before onInconclusive applies."""
    on_inconclusive: OnInconclusive = OnInconclusive.HOLD
    """Hold (wait) or Rollback after inconclusiveLimit."""
    min_samples: int = Field(default=50, ge=0, description="candidate requests in the window for a verdict")
    prometheus: PrometheusConfig | None = None
    checks: Checks = Field(default_factory=list)
    """The checks; every one must pass."""

    @model_validator(mode="after")
    def _names(self) -> Analysis:
        check_unique_names(self.checks, "checks")
        return self


STEP_WEIGHT_RULES = (
    cel(
        "self.filter(s, has(s.weight)).map(s, s.weight).isSorted()",
        "step weights must increase from step to step",
    ),
    cel(
        "self.filter(s, has(s.weight)).all(a, self.filter(s, has(s.weight)).exists_one(b, b.weight == a.weight))",
        "step weights must be strictly increasing (no weight twice)",
    ),
)


class Rollout(ApiModel):
    """How a new revision replaces the stable one."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            cel(
                "self.strategy != 'Immediate' || !has(self.steps) || size(self.steps) == 0",
                "strategy Immediate takes no steps",
                field="steps",
            ),
            cel(
                "self.strategy != 'BlueGreen' || !has(self.steps) || self.steps.all(s, !has(s.weight))",
                "strategy BlueGreen takes only shadow and approval steps",
                field="steps",
            ),
        )
    )

    strategy: Strategy = Strategy.CANARY
    """Canary (steps of weight), BlueGreen (switch at once after its steps) or Immediate."""
    steps: list[RolloutStep] = Field(
        default_factory=list, max_length=MAX_STEPS, json_schema_extra=validations(*STEP_WEIGHT_RULES)
    )
    """The steps, in order; weights strictly increase."""
    analysis: Analysis | None = None
    """Metric checks that gate every step."""
    progress_deadline: Duration = Field(default="10m", description="longest a step may wait for readiness")
    scale_down_delay: Duration = Field(default="30s", description="keep the old revision up this long")
    revision_history_limit: int = Field(default=5, ge=0, le=100)
    """Old revisions kept in status."""
    paused: bool = False
    """Hold the rollout at its current step."""

    @model_validator(mode="after")
    def _steps(self) -> Rollout:
        previous: int | None = None
        for index, step in enumerate(self.steps):
            if step.weight is None:
                continue
            if previous is not None and step.weight <= previous:
                raise ValueError(
                    f"steps[{index}].weight: step weights must be strictly increasing "
                    f"({step.weight} after {previous})"
                )
            previous = step.weight
        if self.strategy == Strategy.IMMEDIATE and self.steps:
            raise ValueError("steps: strategy Immediate takes no steps")
        if self.strategy == Strategy.BLUE_GREEN:
            for index, step in enumerate(self.steps):
                if step.weight is not None:
                    raise ValueError(
                        f"steps[{index}].weight: strategy BlueGreen takes only shadow and approval steps"
                    )
        return self


# --- spec: online learning ----------------------------------------------------------------------


class LearningAlgorithm(StrEnum):
    """The scikit-learn estimators the learner updates online with ``partial_fit``."""

    SGD_CLASSIFIER = "SGDClassifier"
    SGD_REGRESSOR = "SGDRegressor"
    PASSIVE_AGGRESSIVE_CLASSIFIER = "PassiveAggressiveClassifier"
    PASSIVE_AGGRESSIVE_REGRESSOR = "PassiveAggressiveRegressor"
    PERCEPTRON = "Perceptron"
    MULTINOMIAL_NB = "MultinomialNB"
    BERNOULLI_NB = "BernoulliNB"
    MLP_CLASSIFIER = "MLPClassifier"
    MLP_REGRESSOR = "MLPRegressor"


class LearningFeedback(ApiModel):
    """How labelled feedback reaches the learner."""

    max_delay: Duration = Field(
        default="1h", description="feedback older than this is not joined to its request"
    )
    label_field: str = Field(default="label", max_length=256)
    """Key of the label in a feedback body."""
    batch_size: int = Field(default=32, ge=1, le=100000, description="samples per partial_fit call")


class LearningGuard(ApiModel):
    """A prequential quality metric that rolls serving back to the last good snapshot."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            cel("has(self.min) || has(self.max)", "a guard needs min or max"),
            MIN_BELOW_MAX_RULE,
        )
    )

    metric: Literal["accuracy", "logLoss", "mae", "rmse"] = "accuracy"
    """Prequential (test-then-train) metric: accuracy, logLoss, mae or rmse."""
    min: float | None = None
    """Breached below this value."""
    max: float | None = None
    """Breached above this value."""
    window: int = Field(default=500, ge=1, description="labelled samples the metric is computed over")
    min_samples: int = Field(default=100, ge=0)
    """Labelled samples before the guard judges."""

    @model_validator(mode="after")
    def _threshold(self) -> LearningGuard:
        if self.min is None and self.max is None:
            raise ValueError("a guard needs min or max")
        check_min_below_max(self.min, self.max)
        return self


class LearningStorage(ApiModel):
    uri: str = Field(
        min_length=1,
        max_length=2048,
        pattern=r"^(file:///|s3://[^/]+)",
        description="where snapshots and the data log are written: file:///path or s3://bucket/prefix "
        "(credentials and endpoint from AWS_* variables in spec.serving.env)",
    )


class Learning(ApiModel):
    """Online learning from production feedback."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            cel(
                "!self.enabled || has(self.storage)",
                "learning needs storage.uri when enabled",
                field="storage",
            )
        )
    )

    enabled: bool = False
    """Learn from labelled feedback in production."""
    algorithm: LearningAlgorithm | None = Field(
        default=None,
        description="the estimator class spec.model must be; the learner refuses a model of another "
        "class (default: any of these)",
    )
    params: dict[str, Any] = Field(
        default_factory=dict,
        description="estimator parameters set on the initial model before it learns online "
        "(e.g. learning_rate, eta0, alpha); a change starts a new snapshot lineage",
    )
    feedback: LearningFeedback = Field(default_factory=LearningFeedback)
    """How feedback joins its request."""
    snapshot_every: int = Field(default=1000, ge=1, description="learned samples between published snapshots")
    guard: LearningGuard | None = None
    """Pins serving to the last good snapshot when breached; its window is the span of the
    learner's prequential metrics."""
    storage: LearningStorage | None = None
    """Where snapshots and the production-data log live."""
    pinned_snapshot: int | None = Field(
        default=None,
        ge=0,
        description="serve this snapshot whatever the guard decides (learning goes on); unset to "
        "follow the newest good snapshot again",
    )

    @model_validator(mode="after")
    def _storage(self) -> Learning:
        if self.enabled and self.storage is None:
            raise ValueError("storage: learning needs storage.uri when enabled")
        return self


class ModelDeploymentSpec(ApiModel):
    model_config = ConfigDict(
        json_schema_extra=validations(
            cel(
                "self.traffic.provider == 'Router' || !has(self.rollout.steps) "
                "|| self.rollout.steps.all(s, !has(s.shadow))",
                "shadow steps need traffic provider Router (the only one that mirrors a share of requests)",
                field="rollout.steps",
            ),
            cel(
                "!has(self.learning) || !has(self.learning.enabled) || !self.learning.enabled "
                "|| !has(self.model.format) || self.model.format != 'onnx'",
                "an ONNX model cannot learn online: learning starts from a scikit-learn model",
                field="model.format",
            ),
        )
    )

    model: ModelSource
    serving: Serving = Field(default_factory=Serving)
    traffic: Traffic = Field(default_factory=Traffic)
    rollout: Rollout = Field(default_factory=Rollout)
    learning: Learning | None = None

    @model_validator(mode="after")
    def _learning_needs_sklearn(self) -> ModelDeploymentSpec:
        if self.learning is not None and self.learning.enabled and self.model.format == ModelFormat.ONNX:
            raise ValueError(
                "model.format: an ONNX model cannot learn online: learning starts from a scikit-learn model"
            )
        return self

    @model_validator(mode="after")
    def _shadow_needs_router(self) -> ModelDeploymentSpec:
        if self.traffic.provider != TrafficProvider.ROUTER:
            for index, step in enumerate(self.rollout.steps):
                if step.shadow is not None:
                    raise ValueError(
                        f"rollout.steps[{index}].shadow: shadow steps need traffic provider Router "
                        f"(provider {self.traffic.provider.value} cannot mirror a share of requests)"
                    )
        return self


# --- status ---------------------------------------------------------------------------------------


class Phase(StrEnum):
    PENDING = "Pending"
    PROGRESSING = "Progressing"
    PAUSED = "Paused"
    HEALTHY = "Healthy"
    DEGRADED = "Degraded"


class RevisionWeight(StatusModel):
    revision: str
    desired: int = Field(ge=0, le=100, description="percent of traffic the operator asked for")
    verified: int | None = Field(default=None, description="percent the traffic provider confirmed")
    shadow: int | None = Field(default=None, description="percent of traffic mirrored to this revision")


class AnalysisRun(StatusModel):
    time: datetime
    check: str
    verdict: Verdict
    revision: str | None = None
    step: int | None = None
    value: float | None = None
    stable_value: float | None = None
    samples: float | None = None
    message: str | None = None


class AnalysisStatus(StatusModel):
    runs: list[AnalysisRun] = Field(default_factory=list, description="the most recent check results")
    consecutive_failures: int = 0
    total_failures: int = 0
    inconclusive_count: int = 0
    last_run_at: datetime | None = None


class RevisionOutcome(StrEnum):
    SERVING = "Serving"
    PROMOTED = "Promoted"
    ROLLED_BACK = "RolledBack"
    SUPERSEDED = "Superseded"


class RevisionRecord(StatusModel):
    revision: str
    model_uri: str | None = None
    model_version: str | None = None
    created_at: datetime | None = None
    finished_at: datetime | None = None
    outcome: RevisionOutcome | None = None
    message: str | None = None


class SnapshotVerdict(StrEnum):
    GOOD = "Good"
    BAD = "Bad"
    UNJUDGED = "Unjudged"


class PinSource(StrEnum):
    USER = "User"
    GUARD = "Guard"


class SnapshotRecord(StatusModel):
    version: int
    parent: int | None = None
    created_at: datetime | None = None
    samples: int | None = None
    metrics: dict[str, float] = Field(default_factory=dict)
    data_version: int | None = Field(default=None, description="production-data log version it learned up to")
    data_range: str | None = Field(default=None, description="production-data log range it learned from")
    verdict: SnapshotVerdict | None = Field(
        default=None, description="the guard's judgement; Bad is final and never served by the guard"
    )
    reason: str | None = None


class LearningStatus(StatusModel):
    latest_snapshot: int | None = None
    serving_snapshot: int | None = None
    last_good_snapshot: int | None = None
    pinned: int | None = None
    pinned_by: PinSource | None = Field(default=None, description="who holds the pin: User or Guard")
    samples: int | None = Field(default=None, description="samples learned")
    metrics: dict[str, float] = Field(default_factory=dict, description="prequential metrics now")
    data_version: int | None = Field(default=None, description="production-data log version now")
    breached_at_samples: int | None = Field(
        default=None, description="samples learned when the guard last saw a breach"
    )
    snapshots: list[SnapshotRecord] = Field(default_factory=list)
    message: str | None = None


class ModelDeploymentStatus(StatusModel):
    phase: Phase = Phase.PENDING
    observed_generation: int | None = None
    stable_revision: str | None = None
    candidate_revision: str | None = None
    failed_revision: str | None = Field(default=None, description="last revision rolled back")
    current_step: int | None = Field(default=None, description="index into spec.rollout.steps")
    step_started_at: datetime | None = None
    rollout_started_at: datetime | None = None
    weights: list[RevisionWeight] = Field(default_factory=list)
    weights_summary: str | None = Field(
        default=None, description="e.g. 'a1b2c3:90 d4e5f6:10' for kubectl get"
    )
    analysis: AnalysisStatus = Field(default_factory=AnalysisStatus)
    revisions: list[RevisionRecord] = Field(default_factory=list)
    conditions: list[Condition] = Field(default_factory=list)
    message: str | None = None
    learning: LearningStatus | None = None


class ModelDeployment(CustomResource[ModelDeploymentSpec, ModelDeploymentStatus]):
    """A served model and the way its new versions are rolled out."""

    kind: Literal["ModelDeployment"] = "ModelDeployment"

    @property
    def served_model_name(self) -> str:
        """`spec.model.name`, or the resource name."""
        return self.spec.model.name or self.metadata.name or ""
