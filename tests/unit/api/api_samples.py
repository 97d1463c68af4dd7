"""The sample manifests under tests/manifests and examples/, with their expectations."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from mlrollouts.local.apiserver.patching import Yaml12Loader

ROOT = Path(__file__).resolve().parents[3]
MANIFESTS = ROOT / "tests/manifests"
EXAMPLES = [
    ROOT / "examples/canary/modeldeployment.yaml",
    ROOT / "examples/ab-bandit/experiment.yaml",
    ROOT / "examples/composite/compositemodel.yaml",
    ROOT / "examples/online-learning/modeldeployment.yaml",
    ROOT / "examples/online-learning/static.yaml",
]


@dataclass(frozen=True)
class Sample:
    path: Path
    document: dict[str, Any]
    expect: str | None  # substring of the model's error message (names the field)
    server: str | None  # substring of the API server's rejection, "none" when only the operator can tell

    @property
    def id(self) -> str:
        return str(self.path.relative_to(ROOT))


def _comment(text: str, key: str) -> str | None:
    for line in text.splitlines():
        if line.startswith(f"# {key}:"):
            return line.split(":", 1)[1].strip()
    return None


def load(path: Path) -> Sample:
    text = path.read_text()
    # kubectl reads `1e-07` as a number, as YAML 1.2 does (PyYAML's YAML 1.1 reads a string)
    document = yaml.load(text, Loader=Yaml12Loader)
    return Sample(path, document, _comment(text, "expect"), _comment(text, "server"))


def valid() -> list[Sample]:
    return [load(p) for p in EXAMPLES + sorted((MANIFESTS / "valid").glob("*.yaml"))]


def invalid() -> list[Sample]:
    return [load(p) for p in sorted((MANIFESTS / "invalid").glob("*.yaml"))]


def operator_only() -> list[Sample]:
    """Invalid manifests the API server cannot reject (the rule needs more than CEL can express)."""
    return [load(p) for p in sorted((MANIFESTS / "operator-only").glob("*.yaml"))]
