"""`Experiment`: an A/B/n test or a multi-armed bandit over ModelDeployments."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Literal

from pydantic import ConfigDict, Field, model_validator

from mlrollouts.api.common import (
    GATEWAY_API_RULE,
    INT64_MAX,
    MAX_SAMPLES,
    ApiModel,
    Checks,
    CustomResource,
    Duration,
    GatewayApiSection,
    IngressNginxSection,
    Name,
    PrometheusConfig,
    ResourceName,
    RouterConfig,
    StatusModel,
    Stickiness,
    cel,
    check_gateway_api,
    check_query,
    check_unique_names,
    unique_names_rule,
    validations,
)
from mlrollouts.core.conditions import Condition
from mlrollouts.core.durations import parse_duration

MAX_VARIANTS = 16


class Variant(ApiModel):
    name: Name
    """Name of the variant; unique, shown in status and in the x-mlrollouts-variant header."""
    model_deployment: ResourceName = Field(
        description="the ModelDeployment whose stable revision serves this arm"
    )
    weight: int | None = Field(default=None, ge=0, le=100, description="percent of traffic (policy Fixed)")
    floor: int | None = Field(
        default=None, ge=0, le=100, description="minimum percent; default: policy.floor"
    )


class PolicyType(StrEnum):
    FIXED = "Fixed"
    EPSILON_GREEDY = "EpsilonGreedy"
    THOMPSON_SAMPLING = "ThompsonSampling"
    UCB1 = "UCB1"


class Policy(ApiModel):
    """How the split is computed every `interval`."""

    type: PolicyType = PolicyType.FIXED
    """Fixed, EpsilonGreedy, ThompsonSampling or UCB1."""
    epsilon: float = Field(default=0.1, ge=0, le=1, description="EpsilonGreedy: share spent exploring")
    epsilon_decay: float | None = Field(
        default=None, gt=0, le=1, description="EpsilonGreedy: epsilon *= decay per interval"
    )
    floor: int = Field(default=0, ge=0, le=100, description="minimum percent for every variant")
    max_weight_change: int = Field(
        default=20, ge=1, le=100, description="largest weight move per interval, in percent"
    )
    seed: int | None = Field(
        default=None, ge=0, le=INT64_MAX, description="seed of the Monte-Carlo generator"
    )


class RewardSource(StrEnum):
    FEEDBACK = "Feedback"
    QUERY = "Query"


class RewardDistribution(StrEnum):
    BERNOULLI = "Bernoulli"
    GAUSSIAN = "Gaussian"


class Reward(ApiModel):
    """Where rewards come from: router feedback (default) or a PromQL query per variant."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            cel(
                "self.source != 'Query' || has(self.query)",
                "reward source Query needs query",
                field="query",
            ),
            cel(
                "self.source == 'Query' || !has(self.query)",
                "query is only used with reward source Query",
                field="query",
            ),
        )
    )

    source: RewardSource = RewardSource.FEEDBACK
    """Feedback (router feedback API) or Query (PromQL per variant)."""
    query: str | None = Field(
        default=None, min_length=1, max_length=4096, description="PromQL; may use {{ variant }}"
    )
    distribution: RewardDistribution = Field(
        default=RewardDistribution.BERNOULLI,
        description="Bernoulli for rewards in [0, 1], Gaussian otherwise",
    )
    reward_wait: Duration = Field(
        default="0s", description="requests younger than this are not counted as unrewarded"
    )

    @model_validator(mode="after")
    def _query(self) -> Reward:
        if self.source == RewardSource.QUERY and self.query is None:
            raise ValueError("query: reward source Query needs query")
        if self.source != RewardSource.QUERY and self.query is not None:
            raise ValueError("query: query is only used with reward source Query")
        check_query(self.query)
        return self


class DecisionMethod(StrEnum):
    BAYESIAN = "Bayesian"
    FREQUENTIST = "Frequentist"


class Decision(ApiModel):
    """When a winner is declared."""

    method: DecisionMethod = DecisionMethod.BAYESIAN
    """Bayesian (probability to be best and expected loss) or Frequentist (always-valid sequential test)."""
    probability_to_be_best: float = Field(default=0.95, ge=0.5, le=1)
    """Bayesian: a winner needs at least this probability of being best."""
    expected_loss_threshold: float = Field(default=0.001, ge=0)
    """Bayesian: a winner's expected loss must be at most this."""
    alpha: float = Field(default=0.05, gt=0, le=0.5, description="Frequentist: false-positive rate")
    min_samples_per_variant: int = Field(default=1000, ge=1, le=MAX_SAMPLES)
    """No decision before every variant has this many rewarded requests."""


class OnConclusion(StrEnum):
    ROUTE_TO_WINNER = "RouteToWinner"
    KEEP = "Keep"


class ExperimentTrafficProvider(StrEnum):
    ROUTER = "Router"
    GATEWAY_API = "GatewayAPI"
    INGRESS_NGINX = "IngressNginx"


class ExperimentTraffic(ApiModel):
    model_config = ConfigDict(
        json_schema_extra=validations(
            GATEWAY_API_RULE,
            cel(
                "!has(self.stickiness) || !has(self.router.stickiness)",
                "set stickiness once: traffic.stickiness or traffic.router.stickiness",
                field="stickiness",
            ),
        )
    )

    provider: ExperimentTrafficProvider = ExperimentTrafficProvider.ROUTER
    """Router (default; needed by adaptive policies), GatewayAPI or IngressNginx (Fixed only)."""
    stickiness: Stickiness | None = None
    """Keep a user on one variant."""
    router: RouterConfig = Field(default_factory=RouterConfig)
    """The router (provider Router)."""
    gateway_api: GatewayApiSection = None
    ingress_nginx: IngressNginxSection = None

    @model_validator(mode="after")
    def _provider_config(self) -> ExperimentTraffic:
        check_gateway_api(self.provider, self.gateway_api)
        if self.stickiness is not None and self.router.stickiness is not None:
            raise ValueError(
                "stickiness: set stickiness once: traffic.stickiness or traffic.router.stickiness"
            )
        return self


_FLOOR = "(has(v.floor) ? v.floor : self.policy.floor)"


class ExperimentSpec(ApiModel):
    model_config = ConfigDict(
        json_schema_extra=validations(
            cel(
                "self.policy.type != 'Fixed' || self.variants.all(v, has(v.weight))",
                "policy Fixed needs a weight on every variant",
                field="variants",
            ),
            cel(
                # a conditional, so the sum is only taken when every variant has a weight
                "self.policy.type == 'Fixed' && self.variants.all(v, has(v.weight)) "
                "? self.variants.map(v, v.weight).sum() == 100 : true",
                "variant weights must sum to 100 for policy Fixed",
                field="variants",
            ),
            cel(
                f"self.variants.map(v, {_FLOOR}).sum() < 100",
                "variant floors must sum to less than 100",
                field="variants",
            ),
            cel(
                "!has(self.maxDuration) || duration(self.maxDuration) > duration(self.interval)",
                "maxDuration must be longer than interval",
                field="maxDuration",
            ),
            cel(
                "self.traffic.provider != 'IngressNginx' || size(self.variants) <= 2",
                "provider IngressNginx supports two variants only",
                field="traffic.provider",
            ),
            cel(
                "self.traffic.provider == 'Router' || self.policy.type == 'Fixed'",
                "adaptive policies need traffic provider Router",
                field="traffic.provider",
            ),
        )
    )

    variants: list[Variant] = Field(
        min_length=2, max_length=MAX_VARIANTS, json_schema_extra=validations(unique_names_rule("variant"))
    )
    """The arms, each a ModelDeployment."""
    policy: Policy = Field(default_factory=Policy)
    """How the split is computed."""
    interval: Duration = Field(default="1m", description="how often weights and decisions are recomputed")
    reward: Reward = Field(default_factory=Reward)
    """Where rewards come from."""
    guardrails: Checks = Field(default_factory=list)
    """Checks per variant; a variant that breaks one leaves the split."""
    decision: Decision = Field(default_factory=Decision)
    """When a winner is declared."""
    max_duration: Duration | None = Field(default=None, description="stop without a winner after this long")
    on_conclusion: OnConclusion = OnConclusion.KEEP
    """RouteToWinner (send all traffic to the winner) or Keep (leave the split)."""
    traffic: ExperimentTraffic = Field(default_factory=ExperimentTraffic)
    """How traffic reaches the variants."""
    prometheus: PrometheusConfig | None = None
    """Where metrics live."""

    def floor_of(self, variant: Variant) -> int:
        """The floor weight that applies to a variant."""
        return variant.floor if variant.floor is not None else self.policy.floor

    @model_validator(mode="after")
    def _rules(self) -> ExperimentSpec:
        check_unique_names(self.variants, "variants")
        check_unique_names(self.guardrails, "guardrails")
        if self.policy.type == PolicyType.FIXED:
            missing = [i for i, v in enumerate(self.variants) if v.weight is None]
            if missing:
                raise ValueError(
                    f"variants[{missing[0]}].weight: policy Fixed needs a weight on every variant"
                )
            total = sum(v.weight or 0 for v in self.variants)
            if total != 100:
                raise ValueError(
                    f"variants[*].weight: variant weights must sum to 100 for policy Fixed (got {total})"
                )
        floors = sum(self.floor_of(v) for v in self.variants)
        if floors >= 100:
            raise ValueError(f"variants[*].floor: variant floors must sum to less than 100 (got {floors})")
        if self.max_duration is not None and parse_duration(self.max_duration) <= parse_duration(
            self.interval
        ):
            raise ValueError(
                f"maxDuration: maxDuration ({self.max_duration}) must be longer than interval ({self.interval})"
            )
        if self.traffic.provider == ExperimentTrafficProvider.INGRESS_NGINX and len(self.variants) > 2:
            raise ValueError(
                f"traffic.provider: provider IngressNginx supports two variants only (got {len(self.variants)})"
            )
        if self.traffic.provider != ExperimentTrafficProvider.ROUTER and self.policy.type != PolicyType.FIXED:
            raise ValueError(
                f"traffic.provider: policy {self.policy.type.value} needs traffic provider Router"
            )
        return self


# --- status ---------------------------------------------------------------------------------------


class ExperimentPhase(StrEnum):
    PENDING = "Pending"
    RUNNING = "Running"
    CONCLUDED = "Concluded"
    STOPPED = "Stopped"
    DEGRADED = "Degraded"


class Interval(StatusModel):
    low: float
    high: float


class GuardrailState(StrEnum):
    OK = "Ok"
    BREACHED = "Breached"
    UNKNOWN = "Unknown"


class VariantStatus(StatusModel):
    name: str
    requests: float = 0
    reward_count: float = 0
    reward_sum: float = 0
    mean: float | None = None
    interval: Interval | None = Field(default=None, description="credible or confidence interval of the mean")
    probability_to_be_best: float | None = None
    expected_loss: float | None = None
    weight: int = 0
    guardrail: GuardrailState = GuardrailState.UNKNOWN
    guardrail_message: str | None = None


class Winner(StatusModel):
    variant: str | None = Field(default=None, description="unset when the experiment ended without a winner")
    reason: str
    evidence: dict[str, float] = Field(default_factory=dict)
    decided_at: datetime | None = None


class ExperimentStatus(StatusModel):
    phase: ExperimentPhase = ExperimentPhase.PENDING
    observed_generation: int | None = None
    variants: list[VariantStatus] = Field(default_factory=list)
    winner: Winner | None = None
    started_at: datetime | None = None
    last_update_at: datetime | None = None
    concluded_at: datetime | None = None
    conditions: list[Condition] = Field(default_factory=list)
    message: str | None = None


class Experiment(CustomResource[ExperimentSpec, ExperimentStatus]):
    """Traffic split over model variants, fixed or adaptive, with a statistically sound winner."""

    kind: Literal["Experiment"] = "Experiment"
