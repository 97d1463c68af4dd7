"""What the operator refuses in ``spec.learning`` beyond what the schema can say."""

from __future__ import annotations

from mlrollouts.api.modeldeployment import ModelDeploymentSpec, ModelFormat


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
    return None
