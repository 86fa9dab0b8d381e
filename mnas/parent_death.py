"""A child process that ends with its parent: Linux's parent-death signal (``prctl``)."""

from __future__ import annotations

import ctypes
import signal
from collections.abc import Callable

__all__ = ["parent_death_signal"]

_PR_SET_PDEATHSIG = 1


def parent_death_signal(signum: signal.Signals) -> Callable[[], None]:
    """A function that, run in a child, has the kernel send it ``signum`` when its parent
    dies, even by SIGKILL. ``prctl`` is looked up here, so a child forked from a threaded
    parent (``preexec_fn``) only calls it. Where there is no ``prctl`` (not Linux), the
    function does nothing: the parent's own handlers must stop the child then."""
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return lambda: None
    return lambda: prctl(_PR_SET_PDEATHSIG, signum)
