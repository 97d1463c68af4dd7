"""The process kubelet run in a thread against a test's API server, and a client of that server."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mlrollouts.controller.kube import SyncKube
from mlrollouts.local.kubelet import ProcessKubelet


@contextlib.contextmanager
def running_kubelet(
    kubeconfig: Path, workdir: Path, **options: Any
) -> Iterator[tuple[SyncKube, ProcessKubelet]]:
    """A client and a ``ProcessKubelet`` (polling every 0.1 s unless ``options`` say otherwise)
    working in ``workdir``; stopped, with its pods, on exit."""
    kube = SyncKube.from_environment(str(kubeconfig))
    kubelet = ProcessKubelet(kube, workdir, kubeconfig=str(kubeconfig), **{"poll_interval": 0.1, **options})
    thread = threading.Thread(target=kubelet.run, daemon=True)
    thread.start()
    try:
        yield kube, kubelet
    finally:
        kubelet.stop()
        thread.join(timeout=20)
        kube.close()
