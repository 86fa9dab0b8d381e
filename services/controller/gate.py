"""A bound on how many trial threads run the controller's own work at once.

Each trial in flight has a thread of its own, which mostly waits on a worker. When the
workers answer fast, dozens of those threads want the interpreter at once, and every
call a user makes (GetSearch, ListTrials, a watch's next event) waits its turn behind
all of them: Python hands its lock round the runnable threads in turn. Measured on two
cores with 64 trials in flight on instant workers (``python -m benchmarks.load``), the p99
of GetSearch was near a second.

The gate keeps that queue short. A trial thread holds one of ``slots`` slots while it
runs the controller's own work (proposing, recording, publishing) and gives it up while
it waits for a worker or for a worker's slot, so threads that wait on a worker cost no
slot and the rest wait for one off the interpreter's queue. The callers of the API hold
no slot: they only ever wait for the threads that do. Fewer slots: faster answers and
fewer trials per second when the workers are instant; with real workers (seconds to
hours a trial) the controller is idle between trials and the gate is never full.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["DEFAULT_SLOTS", "WorkGate"]

DEFAULT_SLOTS = 2


class WorkGate:
    """At most ``slots`` threads between :meth:`held` and :meth:`released` at once; the
    threads waiting for a slot get one in the order they asked."""

    def __init__(self, slots: int = DEFAULT_SLOTS) -> None:
        if slots < 1:
            raise ValueError(f"slots: must be >= 1, got {slots}")
        self.slots = slots
        self._cond = threading.Condition()
        self._in_use = 0
        self._local = threading.local()

    def in_use(self) -> int:
        """Slots held now."""
        with self._cond:
            return self._in_use

    def holding(self) -> bool:
        """Whether the calling thread holds a slot now."""
        return bool(getattr(self._local, "holding", False))

    @contextmanager
    def held(self) -> Iterator[None]:
        """Run the block holding a slot, waiting for one first."""
        if self.holding():
            raise RuntimeError("this thread holds a slot already")
        self._take()
        try:
            yield
        finally:
            self._give()

    @contextmanager
    def released(self) -> Iterator[None]:
        """Run the block (a wait on a worker) without this thread's slot, and take a slot
        again after it; a thread that holds none (the scheduler's, the reference's, an
        API call's) runs the block as it is."""
        if not self.holding():
            yield
            return
        self._give()
        try:
            yield
        finally:
            self._take()

    def _take(self) -> None:
        with self._cond:
            self._cond.wait_for(lambda: self._in_use < self.slots)
            self._in_use += 1
        self._local.holding = True

    def _give(self) -> None:
        self._local.holding = False
        with self._cond:
            self._in_use -= 1
            self._cond.notify()
