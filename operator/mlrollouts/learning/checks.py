"""What the operator refuses in ``spec.learning`` beyond what the schema can say."""

from __future__ import annotations

from mlrollouts.api.common import TrafficProvider
from mlrollouts.api.modeldeployment import LearningPromotion, ModelDeploymentSpec, ModelFormat


def learning_refusal(spec: ModelDeploymentSpec) -> str | None:
    """Why the operator will not run a learner for ``spec`` (naming the field), or None."""
    learning = spec.learning
    if learning is None or not learning.enabled:
        return None
    if spec.model.format is ModelFormat.ONNX or spec.model.uri.lower().split("?")[0].endswith(".onnx"):
        return (
            "spec.model.uri: an ONNX model cannot learn online; spec.learning starts from a scikit-learn "
            "estimator with partial_fit saved with skops"
        )
    kept = learning.snapshots.keep * learning.snapshot_every
    window = learning.guard.window if learning.guard is not None else 0
    if kept < window + 2 * learning.snapshot_every:
        return (
            f"spec.learning.snapshots.keep: {learning.snapshots.keep} snapshots of {learning.snapshot_every} "
            f"samples do not reach back past the guard's window of {window} samples; the last good "
            f"snapshot the guard falls back to could be deleted (keep at least "
            f"{-(-window // learning.snapshot_every) + 2})"
        )
    if learning.promotion is LearningPromotion.CANARY:
        return canary_refusal(spec)
    return None


def canary_refusal(spec: ModelDeploymentSpec) -> str | None:
    """Why ``promotion: Canary`` cannot gate snapshots under ``spec``, or None."""
    if spec.traffic.provider is not TrafficProvider.ROUTER:
        return (
            "spec.learning.promotion: Canary splits the stable revision's traffic between two snapshot "
            f"Deployments through the router; traffic provider {spec.traffic.provider.value} cannot"
        )
    learning = spec.learning
    assert learning is not None
    analysis = learning.canary.analysis if learning.canary is not None else None
    analysis = analysis or spec.rollout.analysis
    if analysis is None or not analysis.checks:
        return (
            "spec.learning.canary.analysis: promotion Canary needs analysis checks (here or in "
            "spec.rollout.analysis); without them no snapshot would ever be judged"
        )
    return None
