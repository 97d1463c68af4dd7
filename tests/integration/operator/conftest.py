"""Fixtures of the operator integration tests: emulator + kubelet stand-in, operator process."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import Cluster, start_operator


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(tmp_path)
    try:
        yield c
    finally:
        c.stop()


@pytest.fixture
def namespace(cluster: Cluster) -> str:
    name = f"t-{uuid.uuid4().hex[:8]}"
    cluster.create_namespace(name)
    return name


class Operator:
    """The operator process; ``kill()`` is a crash (SIGKILL), ``start()`` a fresh replica."""

    def __init__(self, cluster: Cluster, workdir: Path, prometheus_url: str | None) -> None:
        self.cluster, self.workdir, self.prometheus_url = cluster, workdir, prometheus_url
        self.proc = None
        self.metrics_port = 0

    def start(self) -> Operator:
        self.proc, self.metrics_port = start_operator(self.cluster, self.workdir, self.prometheus_url)
        return self

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.stop()
            self.proc = None

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()
            self.proc = None

    def output(self) -> str:
        return self.proc.output() if self.proc else ""


@pytest.fixture
def operator_factory(cluster: Cluster, tmp_path: Path):
    started: list[Operator] = []

    def make(prometheus_url: str | None = None) -> Operator:
        op = Operator(cluster, tmp_path, prometheus_url).start()
        started.append(op)
        return op

    try:
        yield make
    finally:
        for op in started:
            op.stop()
