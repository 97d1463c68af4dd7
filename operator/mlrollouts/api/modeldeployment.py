"""`ModelDeployment`: one served model, rolled out revision by revision."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, model_validator

from mlrollouts.api.common import (
    GATEWAY_API_RULE,
    MAX_SAMPLES,
    MIN_BELOW_MAX_RULE,
    ApiModel,
    Checks,
    CustomResource,
    Duration,
    GatewayApiSection,
    IngressNginxSection,
    ModelUri,
    Name,
    PrometheusConfig,
    Quantity,
    ResourceName,
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


TrustedTypeName = Annotated[
    str,
    Field(
        min_length=3,
        max_length=256,
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+$",
        description="a fully-qualified Python type name (module.Type)",
    ),
]


class PersistentVolumeClaimRef(ApiModel):
    claim_name: ResourceName = Field(description="a PersistentVolumeClaim in the resource's namespace")


class CompileCache(ApiModel):
    """Where the serving replicas of a revision share the model compiled to ONNX."""

    persistent_volume_claim: PersistentVolumeClaimRef = Field(
        description="a volume every serving pod mounts (ReadWriteMany when the pods run on several nodes): "
        "the first replica of a revision compiles the scikit-learn model into it, the later ones (scale-out, "
        "restarts) start from the compiled model"
    )


class ModelSource(ApiModel):
    """The model artefact a revision serves."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            cel(
                "!has(self.allowUnsafePickle) || !self.allowUnsafePickle || self.format != 'onnx'",
                "allowUnsafePickle applies only to sklearn models",
                field="allowUnsafePickle",
            ),
            cel(
                "!has(self.trustedTypes) || size(self.trustedTypes) == 0 || self.format != 'onnx'",
                "trustedTypes applies only to sklearn (skops) models",
                field="trustedTypes",
            ),
            cel(
                "!has(self.compileCache) || (self.format != 'onnx' && !self.uri.endsWith('.onnx'))",
                "an ONNX model is served as it is: only sklearn models are compiled",
                field="compileCache",
            ),
        )
    )

    name: Name | None = Field(default=None, description="served model name; default: the resource name")
    uri: ModelUri = Field(description="file:///path, http(s)://host/path or s3://bucket/key location")
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
    trusted_types: list[TrustedTypeName] = Field(
        default_factory=list,
        max_length=64,
        description=(
            "fully-qualified types a skops (sklearn) model file may hold beyond those skops trusts by "
            "default, e.g. sklearn.tree._tree.Tree for tree ensembles; review them before listing them "
            "(pin the file with sha256 to vouch for exactly the file you reviewed)"
        ),
        json_schema_extra={"x-kubernetes-list-type": "set"},
    )
    compile_cache: CompileCache | None = None

    @model_validator(mode="after")
    def _compile_cache(self) -> ModelSource:
        if self.compile_cache is not None and (self.format == ModelFormat.ONNX or self.uri.endswith(".onnx")):
            raise ValueError(
                "compileCache: an ONNX model is served as it is: only sklearn models are compiled"
            )
        return self

    @model_validator(mode="after")
    def _trusted_types(self) -> ModelSource:
        if self.trusted_types and self.format == ModelFormat.ONNX:
            raise ValueError("trustedTypes: applies only to sklearn (skops) models")
        return self

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
    """Inconclusive runs in a row before onInconclusive applies (runs the metrics provider could not
    evaluate count too when onInconclusive is Rollback; under Hold the step waits for the provider)."""
    on_inconclusive: OnInconclusive = OnInconclusive.HOLD
    """Hold (wait) or Rollback after inconclusiveLimit."""
    min_samples: int = Field(
        default=50, ge=0, le=MAX_SAMPLES, description="candidate requests in the window for a verdict"
    )
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


class HookType(StrEnum):
    PRE_ROLLOUT = "pre-rollout"
    STEP = "step"
    POST_ROLLOUT = "post-rollout"
    LOAD = "load"


class HookFailure(StrEnum):
    ROLLBACK = "Rollback"
    HOLD = "Hold"


HOOK_URL_PATTERN = r"^https?://[^/?#\s]+(/\S*)?$"
MAX_LOAD_RATE = 100


class RolloutHook(ApiModel):
    """An HTTP call at a point of the rollout, or traffic generated for the candidate.

    `pre-rollout` (before the first step, once the candidate is ready), `step` (before each of
    `steps`, a gate) and `post-rollout` (after promotion or rollback) POST a JSON body with `name`,
    `namespace`, `revision`, `phase`, `step`, `hook`, `type` and `metadata` to `url`; a 2xx answer
    within `timeout` is success. A failed `step` gate holds the rollout (Paused, resumed by
    `mlrollouts resume`, which calls the gate again); a failed `pre-rollout` hook rolls back or holds
    (`onFailure`); `post-rollout` results are only recorded. Each hook is called once per revision
    and step. `load` sends `rate` POSTs of `body` a second to `path` on the candidate's Service
    while each of its `steps` runs (for canaries that get little traffic of their own)."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            cel("self.type == 'load' || has(self.url)", "url is required for this hook type", field="url"),
            cel(
                "self.type != 'load' || (has(self.rate) && has(self.body) && !has(self.url))",
                "a load hook takes rate and body, and no url",
            ),
            cel(
                "self.type == 'load' || (!has(self.rate) && !has(self.body) && !has(self.path))",
                "rate, body and path belong to a load hook",
            ),
            cel(
                "!has(self.onFailure) || self.type == 'pre-rollout'",
                "onFailure belongs to a pre-rollout hook",
                field="onFailure",
            ),
            cel(
                "!has(self.steps) || self.type == 'step' || self.type == 'load'",
                "steps belong to a step or load hook",
                field="steps",
            ),
        )
    )

    name: Name
    """Names the hook in status and in the call."""
    type: HookType
    """pre-rollout, step, post-rollout or load."""
    url: str | None = Field(default=None, max_length=2048, pattern=HOOK_URL_PATTERN)
    """Where the hook is POSTed (not for `load`)."""
    timeout: Duration = "10s"
    """Longest one call (or one load request) may take."""
    on_failure: HookFailure | None = Field(
        default=None, description="pre-rollout only: Rollback (default) or Hold when the hook fails"
    )
    steps: list[Annotated[int, Field(ge=1, le=MAX_STEPS)]] | None = Field(
        default=None, max_length=MAX_STEPS, description="step numbers (1 = first) it applies to; default all"
    )
    metadata: dict[str, Annotated[str, Field(max_length=1024)]] = Field(default_factory=dict)
    """Sent with the call as is."""
    rate: int | None = Field(default=None, ge=1, le=MAX_LOAD_RATE, description="load: requests per second")
    path: str | None = Field(
        default=None,
        max_length=1024,
        pattern=r"^/\S*$",
        description="load: path on the candidate Service (default /v2/models/<model>/infer)",
    )
    body: dict[str, Any] | None = None
    """load: the JSON body of every request, e.g. a V2 inference request."""

    @model_validator(mode="after")
    def _fields_of_type(self) -> RolloutHook:
        load = self.type is HookType.LOAD
        if not load and self.url is None:
            raise ValueError(f"url: required for a {self.type.value} hook")
        if load and (self.rate is None or self.body is None or self.url is not None):
            raise ValueError("a load hook takes rate and body, and no url")
        if not load and (self.rate is not None or self.body is not None or self.path is not None):
            raise ValueError("rate, body and path belong to a load hook")
        if self.on_failure is not None and self.type is not HookType.PRE_ROLLOUT:
            raise ValueError("onFailure: belongs to a pre-rollout hook")
        if self.steps is not None and self.type not in (HookType.STEP, HookType.LOAD):
            raise ValueError("steps: belong to a step or load hook")
        return self


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
    hooks: list[RolloutHook] = Field(default_factory=list, max_length=16)
    """HTTP calls before, during and after the rollout, and load for the candidate."""

    @model_validator(mode="after")
    def _steps(self) -> Rollout:
        check_unique_names(self.hooks, "hooks")
        for index, hook in enumerate(self.hooks):
            beyond = [n for n in hook.steps or () if n > len(self.steps)]
            if beyond:
                raise ValueError(
                    f"hooks[{index}].steps: step {beyond[0]} does not exist ({len(self.steps)} steps)"
                )
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


class LearningSnapshots(ApiModel):
    """How many published snapshots the storage keeps."""

    keep: int = Field(
        default=100,
        ge=2,
        le=1_000_000,
        description="the newest snapshots kept; the pinned, served and candidate snapshots and the "
        "first snapshot of each kept lineage are never deleted, and the data log is never rewritten",
    )


class LearningPromotion(StrEnum):
    """How a newly published snapshot reaches serving."""

    DIRECT = "Direct"
    CANARY = "Canary"


class LearningCanary(ApiModel):
    """How ``promotion: Canary`` gates a snapshot: a second serving Deployment serves the candidate
    snapshot to a share of traffic, step by step, each step gated by analysis checks."""

    steps: list[RolloutStep] = Field(
        default_factory=lambda: [RolloutStep(weight=20, duration="1m")],
        min_length=1,
        max_length=MAX_STEPS,
        json_schema_extra=validations(
            *STEP_WEIGHT_RULES,
            cel(
                "self.all(s, !has(s.approval))",
                "a snapshot canary advances on analysis and time; approval steps are not supported",
            ),
        ),
    )
    """Weight (and shadow) steps of the candidate snapshot; weights strictly increase."""
    analysis: Analysis | None = None
    """Checks that gate every step (default: spec.rollout.analysis); a canary needs checks."""
    replicas: int = Field(
        default=1, ge=1, le=100, description="replicas of the candidate-snapshot Deployment"
    )
    progress_deadline: Duration = Field(
        default="2m", description="longest a step may wait for the candidate snapshot to be served"
    )

    @model_validator(mode="after")
    def _steps(self) -> LearningCanary:
        for index, step in enumerate(self.steps):
            if step.approval is not None:
                raise ValueError(
                    f"steps[{index}].approval: a snapshot canary advances on analysis and time; "
                    "approval steps are not supported"
                )
        Rollout(steps=self.steps)  # the weight rules of a model canary, with the same messages
        return self


class Learning(ApiModel):
    """Online learning from production feedback."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            cel(
                "!self.enabled || has(self.storage)",
                "learning needs storage.uri when enabled",
                field="storage",
            ),
            cel(
                "!has(self.canary) || (has(self.promotion) && self.promotion == 'Canary')",
                "canary: set promotion: Canary to use it",
                field="canary",
            ),
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
    promotion: LearningPromotion = Field(
        default=LearningPromotion.DIRECT,
        description="Direct: serving follows each new snapshot; Canary: a snapshot is first served to "
        "a share of traffic by a second serving Deployment and promoted by analysis",
    )
    canary: LearningCanary | None = None
    """Steps and checks of promotion: Canary (default: one 20 % step of 1m, spec.rollout.analysis)."""
    snapshots: LearningSnapshots = Field(default_factory=LearningSnapshots)
    """Retention of published snapshots."""

    @model_validator(mode="after")
    def _storage(self) -> Learning:
        if self.enabled and self.storage is None:
            raise ValueError("storage: learning needs storage.uri when enabled")
        if self.canary is not None and self.promotion is not LearningPromotion.CANARY:
            raise ValueError("canary: set promotion: Canary to use it")
        return self

    @property
    def canary_or_default(self) -> LearningCanary:
        return self.canary if self.canary is not None else LearningCanary()


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


PREVIOUS_ATTEMPTS_LIMIT = 10
"""Earlier attempts kept per revision record; older ones are dropped, ``attempt`` still counts them."""


class RevisionAttempt(StatusModel):
    """An earlier rollout of a revision, written once when the revision is rolled out again and never
    changed afterwards."""

    attempt: int = Field(ge=1, description="which rollout of the revision this was, 1 for the first")
    started_at: datetime | None = None
    finished_at: datetime | None = Field(
        default=None,
        description="when it stopped: the revision scaled to zero or rolled out again, whichever came first",
    )
    outcome: RevisionOutcome = Field(description="how it ended; never changed")
    message: str | None = None


class RevisionRecord(StatusModel):
    """One revision. attempt, startedAt, finishedAt, outcome and message describe its current (latest)
    rollout; previousAttempts the ones before, oldest first."""

    revision: str
    model_uri: str | None = None
    model_version: str | None = None
    template: dict[str, Any] | None = Field(
        default=None,
        description="spec.model and spec.serving (without replicas) the revision is named after: "
        "what `mlrollouts undo` restores",
    )
    created_at: datetime | None = None
    attempt: int | None = Field(
        default=None,
        ge=1,
        description="which rollout of the revision the record describes, 1 for the first (when absent); "
        "it counts also the earlier attempts no longer kept in previousAttempts",
    )
    started_at: datetime | None = Field(
        default=None, description="when the current attempt started (createdAt when absent)"
    )
    finished_at: datetime | None = Field(
        default=None, description="when the revision is (or was) scaled to zero; absent while it runs"
    )
    outcome: RevisionOutcome | None = Field(
        default=None,
        description="how the current attempt ended; absent while it runs, never changed once set",
    )
    message: str | None = None
    previous_attempts: list[RevisionAttempt] | None = Field(
        default=None,
        max_length=PREVIOUS_ATTEMPTS_LIMIT,
        description=f"the earlier attempts, oldest first, each as it ended; only appended to, the last "
        f"{PREVIOUS_ATTEMPTS_LIMIT} kept",
    )


class SnapshotVerdict(StrEnum):
    GOOD = "Good"
    BAD = "Bad"
    UNJUDGED = "Unjudged"


class PinSource(StrEnum):
    USER = "User"
    GUARD = "Guard"
    CANARY = "Canary"


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


class LearningCanaryStatus(StatusModel):
    """The snapshot canary of ``promotion: Canary`` (everything it needs to resume)."""

    phase: Phase = Phase.PENDING
    stable_snapshot: int | None = Field(default=None, description="the promoted snapshot stable pods serve")
    candidate_snapshot: int | None = Field(default=None, description="the snapshot under analysis")
    refused_snapshot: int | None = Field(default=None, description="the last snapshot the analysis refused")
    current_step: int | None = None
    weight: int = Field(default=0, description="percent of traffic to the candidate snapshot")
    shadow: int | None = Field(default=None, description="percent of traffic mirrored to the candidate")
    promoting: bool = False
    started_at: datetime | None = None
    step_started_at: datetime | None = None
    weights_changed_at: datetime | None = None
    paused_at: datetime | None = None
    pause_reason: str | None = None
    last_analysis_at: datetime | None = None
    last_verdict: Verdict | None = None
    last_verdict_step: int | None = None
    failures: int = 0
    consecutive_failures: int = 0
    inconclusive: int = 0
    runs: list[AnalysisRun] = Field(default_factory=list, description="checks of the last analysis run")
    message: str | None = None


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
    lineage: str | None = Field(
        default=None, description="id of the snapshot lineage the learner learns (initial model and params)"
    )
    lineage_start: int | None = Field(default=None, description="first snapshot of the current lineage")
    canary: LearningCanaryStatus | None = None


class HookResult(StrEnum):
    PENDING = "Pending"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"


class HookRecord(StatusModel):
    """One call of a rollout hook; a hook is called once per revision and step."""

    name: str
    type: HookType
    revision: str
    step: int | None = Field(default=None, description="step number (1 = first) of a step hook")
    result: HookResult = HookResult.PENDING
    at: datetime | None = None
    message: str | None = None


class ModelDeploymentStatus(StatusModel):
    phase: Phase = Phase.PENDING
    observed_generation: int | None = None
    stable_revision: str | None = None
    candidate_revision: str | None = None
    failed_revision: str | None = Field(default=None, description="last revision rolled back")
    current_step: int | None = Field(default=None, description="index into spec.rollout.steps")
    step: str | None = Field(
        default=None, description="the step in progress as people count it: 2/3 is the second of three"
    )
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
    replicas: int | None = Field(
        default=None, description="serving pods of every revision (the scale subresource's current count)"
    )
    selector: str | None = Field(
        default=None, description="label selector of the serving pods (for a HorizontalPodAutoscaler)"
    )
    hooks: list[HookRecord] = Field(default_factory=list, description="calls of spec.rollout.hooks")


class ModelDeployment(CustomResource[ModelDeploymentSpec, ModelDeploymentStatus]):
    """A served model and the way its new versions are rolled out."""

    kind: Literal["ModelDeployment"] = "ModelDeployment"

    @property
    def served_model_name(self) -> str:
        """`spec.model.name`, or the resource name."""
        return self.spec.model.name or self.metadata.name or ""
