"""Fixtures of the learner's unit tests."""

from __future__ import annotations

import pytest
from learning_testing import Dataset, load_dataset


@pytest.fixture(scope="session")
def iris() -> Dataset:
    return load_dataset("iris")


@pytest.fixture(scope="session")
def diabetes() -> Dataset:
    return load_dataset("diabetes")
