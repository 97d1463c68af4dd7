"""Pytest fixtures for tests that need a Kubernetes API: import them into a ``conftest.py``::

    from mlrollouts.local.apiserver.testing import apiserver, kubeconfig  # noqa: F401

``apiserver`` is a running :class:`ApiServer` (fresh per test); ``kubeconfig`` is the path of a
kubeconfig pointing at it (also exported as ``KUBECONFIG``-ready ``apiserver.kubeconfig_path``).
For a separate process, run ``mlrollouts local apiserver --port 0 --kubeconfig PATH`` and wait for
``PATH`` to appear (or poll ``<url>/readyz``).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from .server import ApiServer


@pytest.fixture
def apiserver(tmp_path: Path) -> Iterator[ApiServer]:
    with ApiServer(port=0, audit_path=tmp_path / "apiserver-audit.jsonl") as api:
        api.kubeconfig_path = api.write_kubeconfig(tmp_path / "kubeconfig")  # type: ignore[attr-defined]
        yield api


@pytest.fixture
def kubeconfig(apiserver: ApiServer) -> Path:
    return apiserver.kubeconfig_path  # type: ignore[attr-defined,no-any-return]
