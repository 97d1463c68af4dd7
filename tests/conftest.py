"""Fixtures shared by every suite."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from support.prometheus import PrometheusServer

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[PrometheusServer]:
    """A real Prometheus server on a loopback port; point it at targets with ``set_targets``."""
    server = PrometheusServer(tmp_path / "prometheus").start()
    try:
        yield server
    finally:
        server.stop()
