"""Experiments over model variants: split policies, bandits, their statistics and the planner of
an Experiment's passes (pure).

:func:`evaluate` turns :class:`VariantObservation` values and :class:`ExperimentSettings` into the
next split and a decision; :func:`mlrollouts.experiment.plan.plan` decides one pass of an
Experiment resource (status, route weights, events) around it. Nothing here reads a clock or talks
to a server.
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
