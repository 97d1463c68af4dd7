"""Child process that loads a scikit-learn model and compiles it to ONNX (see ``open_model``).

Input: one JSON argument. Output: ``result.json`` (status ``compiled`` | ``fallback`` | ``error``,
reason, task, estimator) and ``model.onnx`` in ``out_dir``.
"""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path


def main(argv: list[str]) -> int:
    from mlserving.runtimes import LoadOptions, ModelLoadError, _load, compile_estimator

    request = json.loads(argv[0])
    out_dir = Path(request["out_dir"])
    options = LoadOptions(
        format="sklearn",
        allow_unsafe_pickle=bool(request["allow_unsafe_pickle"]),
        trusted_types=tuple(request["trusted_types"]),
        compile_tolerance=float(request["compile_tolerance"]),
        isolate_compile=False,
    )
    warnings.simplefilter("ignore")
    try:
        estimator = _load(Path(request["model_file"]), options)
        outcome = compile_estimator(estimator, options)
    except ModelLoadError as exc:
        result = {"status": "error", "reason": str(exc), "untrusted_types": list(getattr(exc, "types", ()))}
    else:
        if outcome.onnx_bytes is not None:
            (out_dir / "model.onnx").write_bytes(outcome.onnx_bytes)
        result = {
            "status": "compiled" if outcome.onnx_bytes is not None else "fallback",
            "reason": outcome.reason,
            "task": outcome.task,
            "estimator": outcome.estimator,
        }
    (out_dir / "result.json").write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
