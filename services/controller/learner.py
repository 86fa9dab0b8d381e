"""PPO updates in a process of their own.

An update is some tens of milliseconds of LSTM passes per batch. On a thread of the
controller it competes with the trials in flight for the interpreter lock, and every
trial's RPCs and store writes slow down while it runs (``benchmarks/controller_overhead.py``).
Here a learner process does the arithmetic: each request carries the policy and
optimizer as they stand and a batch; the answer is their state after the update. The
process keeps nothing between requests, so one process serves every search of the
controller, and a new one can take over from a dead one without any replay.

The process starts on the first request (or :func:`warm_up`), runs at a lower scheduling
priority than the controller (trials in flight come first) and ends when the controller
does: it exits as soon as its end of the pipe reads end-of-file.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import multiprocessing.connection
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

__all__ = [
    "LearnerError",
    "LearnerProcess",
    "UpdateRequest",
    "UpdateResult",
    "shared_learner",
    "warm_up",
]

_logger = logging.getLogger(__name__)

# Scheduling priority of the learner relative to the controller (see os.nice).
NICENESS = 10
_START_SECONDS = 120.0  # importing torch in a fresh interpreter on a busy machine
_UPDATE_SECONDS = 600.0  # an update takes tens of milliseconds: past this it is stuck
_RETRY_START_SECONDS = 60.0  # after a failed start, updates run in the controller meanwhile
_CONTEXT = multiprocessing.get_context("spawn")  # never fork a process that runs gRPC


class LearnerError(Exception):
    """The learner process could not do the update (it died, or the update raised)."""


@dataclass(frozen=True)
class UpdateRequest:
    """One update: the policy's shape and settings, its state and the batch.

    ``state`` is the policy and optimizer as
    :func:`~services.controller.ppo_state.save_state` writes them; ``batch`` is
    one ``(decisions, advantage, log_probs)`` per sample (``log_probs`` empty when
    unknown).
    """

    sizes: tuple[int, ...]
    settings: Any  # strategies.PPOConfig; Any keeps this module free of the import cycle
    state: bytes
    batch: Sequence[tuple[Sequence[int], float, Sequence[float]]]


@dataclass(frozen=True)
class UpdateResult:
    state: bytes  # as in UpdateRequest, after the update
    entropy: float  # mean per-decision entropy over the batch (the last epoch's)


class LearnerProcess:
    """A learner process and the pipe to it; one request at a time."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._conn: multiprocessing.connection.Connection | None = None
        self._process: multiprocessing.process.BaseProcess | None = None
        self._start_after = 0.0  # monotonic time before which no new start is tried

    @property
    def pid(self) -> int | None:
        process = self._process
        return process.pid if process is not None else None

    def start(self) -> None:
        """Start the process (if not running) and wait until it answers."""
        with self._lock:
            self._ensure_running()

    def update(self, request: UpdateRequest) -> UpdateResult:
        """Apply ``request`` in the learner process; :class:`LearnerError` when it cannot."""
        payload = (request.sizes, request.settings, request.state, list(request.batch))
        with self._lock:
            # A request holds everything, so a process that died (before or during it) is
            # replaced and the request sent again, once.
            for attempt in range(2):
                conn = self._ensure_running()
                # A process that neither reads nor answers is killed: a send to it would
                # otherwise block for good once the pipe is full.
                watchdog = threading.Timer(_UPDATE_SECONDS, self._kill_stuck, (self._process,))
                watchdog.daemon = True
                watchdog.start()
                try:
                    conn.send(("update", payload))
                    kind, answer = conn.recv()
                    break
                except (EOFError, OSError) as err:
                    self._stop()
                    if attempt:
                        reason = err or type(err).__name__
                        raise LearnerError(f"learner process died ({reason})") from None
                finally:
                    watchdog.cancel()
        if kind != "ok":
            raise LearnerError(f"learner process: {answer}")
        state, entropy = answer
        return UpdateResult(state=state, entropy=float(entropy))

    def close(self) -> None:
        with self._lock:
            self._stop()

    def _ensure_running(self) -> multiprocessing.connection.Connection:
        if self._conn is not None and self._process is not None and self._process.is_alive():
            return self._conn
        self._stop()
        if time.monotonic() < self._start_after:
            raise LearnerError("the learner process failed to start a moment ago")
        try:
            parent = self._start()
        except LearnerError:
            self._start_after = time.monotonic() + _RETRY_START_SECONDS
            raise
        return parent

    def _start(self) -> multiprocessing.connection.Connection:
        parent, child = _CONTEXT.Pipe(duplex=True)
        process = _CONTEXT.Process(target=_serve, args=(child,), name="mnas-learner", daemon=True)
        try:
            process.start()
        except Exception as err:
            parent.close()
            raise LearnerError(f"cannot start the learner process: {err}") from None
        finally:
            child.close()
        self._conn, self._process = parent, process
        try:
            if not parent.poll(_START_SECONDS) or parent.recv() != ("ready", None):
                raise LearnerError("the learner process did not start")
        except (EOFError, OSError) as err:
            self._stop()
            raise LearnerError(f"the learner process did not start ({err})") from None
        except LearnerError:
            self._stop()
            raise
        _logger.info("learner process %d started", process.pid)
        return parent

    @staticmethod
    def _kill_stuck(process: multiprocessing.process.BaseProcess | None) -> None:
        if process is not None and process.is_alive():
            _logger.warning(
                "learner process %s: no answer in %g s, killed", process.pid, _UPDATE_SECONDS
            )
            process.kill()

    def _stop(self) -> None:
        conn, process = self._conn, self._process
        self._conn = self._process = None
        if conn is not None:
            conn.close()  # the process reads end-of-file and exits
        if process is not None:
            process.join(5.0)
            if process.is_alive():
                process.kill()
                process.join()


_shared: LearnerProcess | None = None
_shared_lock = threading.Lock()


def shared_learner() -> LearnerProcess:
    """The learner process of this controller, shared by all its searches."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = LearnerProcess()
        return _shared


def warm_up() -> None:
    """Start the shared learner now, so the first update does not wait for it."""
    try:
        shared_learner().start()
    except LearnerError as err:
        _logger.warning("%s; updates will run in the controller's process", err)


# -- the learner process -------------------------------------------------------------


def _serve(conn: multiprocessing.connection.Connection) -> None:
    """Answer update requests until the pipe closes."""
    with contextlib.suppress(OSError):  # not allowed: the same priority, then
        os.nice(NICENESS)
    torch.set_num_threads(1)
    # Imported here, not at the top: the controller imports this module from ppo, which
    # imports the update.
    from services.controller.ppo_update import apply_update

    # The first optimizer imports torch's compiler modules (about a second): now, not
    # during the first update.
    torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))])
    conn.send(("ready", None))
    while True:
        try:
            kind, payload = conn.recv()
        except (EOFError, OSError):
            return
        if kind != "update":
            conn.send(("error", f"unknown request {kind!r}"))
            continue
        sizes, settings, state, batch = payload
        try:
            new_state, entropy = apply_update(sizes, settings, state, batch)
        except Exception as err:  # reported to the controller, which learns without us
            conn.send(("error", f"{type(err).__name__}: {err}"))
            continue
        conn.send(("ok", (new_state, entropy)))
