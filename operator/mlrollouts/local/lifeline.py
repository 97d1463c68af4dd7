"""Children that die with their parent, so that no playground process outlives the one that started it.

On Linux the child asks the kernel (``prctl(PR_SET_PDEATHSIG)``) to send it SIGTERM when its parent
ends, however the parent ends: SIGKILL, a crash, a signal with no handler. The request is tied to the
thread that forked the child, so children are started from the long-lived main loop of their parent.
Elsewhere the function does nothing and the parent's own shutdown path is all there is.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import sys
from collections.abc import Callable

_PR_SET_PDEATHSIG = 1


def _prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    except OSError:
        return None
    prctl: Callable[..., int] = libc.prctl
    return prctl


_PRCTL = _prctl()


def die_with_parent(sig: int = signal.SIGTERM) -> Callable[[], None] | None:
    """A ``preexec_fn`` for ``subprocess.Popen``: the child gets ``sig`` when this process ends.

    None where the platform has no such request (pass it to Popen as is)."""
    if _PRCTL is None:
        return None
    prctl = _PRCTL
    parent = os.getpid()

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
        # the parent may have ended between fork and prctl: then nobody will send the signal
        if os.getppid() != parent:
            os.kill(os.getpid(), sig)

    return preexec
