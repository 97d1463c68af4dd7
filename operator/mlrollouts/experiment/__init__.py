"""Experiments over model variants: split policies, bandits and their statistics (pure).

The controller builds :class:`VariantObservation` values and :class:`ExperimentSettings` from its
resources and calls :func:`evaluate` every interval; nothing here reads a clock or talks to a
server.
"""

from mlrollouts.experiment.config import (
    BayesianRule,
    BetaPrior,
    DecisionRule,
    EpsilonGreedyPolicy,
    ExperimentSettings,
    FixedPolicy,
    FrequentistRule,
    NormalInverseGammaPrior,
    Policy,
    Prior,
    RewardModel,
    ThompsonSamplingPolicy,
    UCB1Policy,
    VariantObservation,
)
from mlrollouts.experiment.engine import (
    Comparison,
    Decision,
    DecisionReason,
    Evaluation,
    VariantStatus,
    evaluate,
)
from mlrollouts.experiment.weights import to_integer_weights

__all__ = [
    "BayesianRule",
    "BetaPrior",
    "Comparison",
    "Decision",
    "DecisionReason",
    "DecisionRule",
    "EpsilonGreedyPolicy",
    "Evaluation",
    "ExperimentSettings",
    "FixedPolicy",
    "FrequentistRule",
    "NormalInverseGammaPrior",
    "Policy",
    "Prior",
    "RewardModel",
    "ThompsonSamplingPolicy",
    "UCB1Policy",
    "VariantObservation",
    "VariantStatus",
    "evaluate",
    "to_integer_weights",
]
