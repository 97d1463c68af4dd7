"""Train the iris models of the playground's canary example: ``iris-v1.skops`` (a weak logistic
regression), ``iris-v2.skops`` (a well-fitted one) and ``iris-v3.onnx`` (a graph that fails at
inference, to see a rollback) in the directory given (default: /tmp).

    .venv/bin/python examples/canary/train_iris.py /tmp
"""

from __future__ import annotations

import sys
from pathlib import Path

from mlrollouts.local.demo_canary import train_demo_models

if __name__ == "__main__":
    models = train_demo_models(Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp"))
    for path in (models.v1, models.v2, models.v3):
        print(path.resolve())
