"""Fixtures of the learner's integration tests."""

from __future__ import annotations

import pytest
from learner_process import train_initial_model

pytestmark = pytest.mark.integration


@pytest.fixture(scope="session")
def cancer(tmp_path_factory: pytest.TempPathFactory):
    """(initial model path, stream features, stream labels)."""
    return train_initial_model(tmp_path_factory.mktemp("cancer-model"))
