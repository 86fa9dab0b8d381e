"""Run each training in a child process of its own, so one bad trial fails alone.

A child is forked from a fork server that has already imported torch and the training
code, so starting one costs milliseconds, not the seconds of a fresh interpreter. The
child trains and reports through a pipe; the parent relays progress, and:

- ends the child (SIGKILL) when the caller cancels, or when the training outlives
  ``timeout_seconds`` (:class:`TrialTimedOut`);
- caps the child's address space at its start plus ``memory_limit_bytes``, so an
  allocation past it fails inside the child (:class:`TrialOutOfMemory`);
- reports a child that dies without a result (a crash, the kernel's OOM killer) as
  :class:`TrialCrashed`, naming the signal or exit status.

An :class:`~mnas.errors.InvalidInput` raised by the training (its input found wrong only
once the data was read) comes back as itself; any other exception as
:class:`TrainingError` with its type and message.
"""

from __future__ import annotations

import logging
import multiprocessing
import multiprocessing.connection
import multiprocessing.forkserver
import os
import resource
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from mnas.arch import Architecture
from mnas.errors import InvalidInput
from mnas.parent_death import parent_death_signal
from services.trainer.training import (
    Progress,
    TrainingCancelled,
    TrainingConfig,
    TrainOutcome,
    train,
)
from services.trainer.warm import PRELOAD_ENV

__all__ = [
    "ChildJob",
    "TrialCrashed",
    "TrialFailed",
    "TrialOutOfMemory",
    "TrialTimedOut",
    "run_isolated",
    "start_fork_server",
]

_logger = logging.getLogger(__name__)

_CONTEXT = multiprocessing.get_context("forkserver")
_PRELOAD = ["services.trainer.isolation", "services.trainer.warm"]
_POLL_SECONDS = 0.1
_JOIN_SECONDS = 5.0
_MEMORY_MARKERS = ("can't allocate memory", "out of memory", "cannot allocate memory")


class TrialFailed(Exception):
    """The training failed by itself (not because of its input or the trainer)."""


class TrainingError(Exception):
    """The training raised an unexpected exception: reported as an internal error, which
    another attempt may not meet."""


class TrialTimedOut(TrialFailed):
    """The training ran past its time limit and was ended."""


class TrialOutOfMemory(TrialFailed):
    """The training tried to allocate past its memory limit."""


class TrialCrashed(TrialFailed):
    """The child process died without reporting a result."""


@dataclass(frozen=True)
class ChildJob:
    """Everything a child needs to train one architecture (picklable)."""

    arch: Architecture
    num_classes: int | None
    resolution: int | None
    width: float
    config: TrainingConfig
    device: str = "cpu"
    threads: int | None = None
    keep_weights: bool = False
    memory_limit_bytes: int | None = None


def start_fork_server(preload_datasets: Sequence[str] = ()) -> None:
    """Start the fork server now (it imports torch: seconds) rather than on first use,
    with ``preload_datasets`` decoded once for every child (:mod:`services.trainer.warm`).

    Call before the process starts threads of its own, e.g. before a gRPC server.
    """
    os.environ[PRELOAD_ENV] = ",".join(preload_datasets)
    _CONTEXT.set_forkserver_preload(_PRELOAD)
    multiprocessing.forkserver.ensure_running()


def run_isolated(
    job: ChildJob,
    *,
    on_progress: Callable[[Progress], None] | None = None,
    cancelled: Callable[[], bool] | None = None,
    timeout_seconds: float | None = None,
) -> TrainOutcome:
    """Train ``job`` in a child process; see the module docstring for how it can fail.

    ``cancelled`` is polled every 0.1 s; when true the child is killed and
    :class:`~services.trainer.training.TrainingCancelled` raised.
    """
    _CONTEXT.set_forkserver_preload(_PRELOAD)
    receiver, sender = _CONTEXT.Pipe(duplex=False)
    child = _CONTEXT.Process(
        target=_child_main, args=(sender, job), daemon=True, name=f"train-{job.arch.id}"
    )
    started = time.monotonic()
    child.start()
    sender.close()
    deadline = None if not timeout_seconds else started + timeout_seconds
    try:
        while True:
            if cancelled is not None and cancelled():
                raise TrainingCancelled("training cancelled")
            if deadline is not None and time.monotonic() > deadline:
                raise TrialTimedOut(
                    f"training exceeded its time limit of {timeout_seconds:g}s "
                    "(training.timeout_seconds) and was ended"
                )
            if not receiver.poll(_POLL_SECONDS):
                continue
            try:
                message = receiver.recv()
            except EOFError:
                child.join(_JOIN_SECONDS)
                raise TrialCrashed(_death(child.exitcode)) from None
            kind = message[0]
            if kind == "progress":
                if on_progress is not None:
                    on_progress(message[1])
            elif kind == "result":
                outcome: TrainOutcome = message[1]
                return outcome
            else:
                raise _error(message[1], message[2], job)
    finally:
        if child.is_alive():
            child.kill()
        child.join(_JOIN_SECONDS)
        receiver.close()
        _logger.debug(
            "child %s ended (exit %s) after %.1fs",
            child.name,
            child.exitcode,
            time.monotonic() - started,
        )


def _child_main(sender: multiprocessing.connection.Connection, job: ChildJob) -> None:
    """The child: limit memory, train, send progress and the result or the error."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when a child ends
    # SIGKILL when the parent (the fork server, which ends with the trainer) dies, so a
    # killed trainer leaves no training behind.
    parent_death_signal(signal.SIGKILL)()
    try:
        if job.memory_limit_bytes is not None:
            _limit_address_space(job.memory_limit_bytes)
        outcome = train(
            job.arch,
            num_classes=job.num_classes,
            resolution=job.resolution,
            width=job.width,
            config=job.config,
            on_progress=lambda progress: sender.send(("progress", progress)),
            threads=job.threads,
            device=job.device,
            keep_weights=job.keep_weights,
        )
        sender.send(("result", outcome))
    except BaseException as err:  # everything goes back to the parent
        kind = _kind(err)
        # Invalid input names the bad field ("train_examples: ..."); keep it as it is.
        text = str(err) if kind == "invalid" else f"{type(err).__name__}: {err}"
        sender.send(("error", kind, text))
    finally:
        sender.close()


def _limit_address_space(extra_bytes: int) -> None:
    """Let this process map at most ``extra_bytes`` more than it has mapped now."""
    with open("/proc/self/statm") as statm:
        pages = int(statm.read().split()[0])
    limit = pages * resource.getpagesize() + extra_bytes
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def _kind(err: BaseException) -> str:
    if isinstance(err, MemoryError):
        return "memory"
    text = str(err).lower()
    if isinstance(err, RuntimeError) and any(marker in text for marker in _MEMORY_MARKERS):
        return "memory"
    if isinstance(err, InvalidInput):
        return "invalid"
    return "other"


def _error(kind: str, text: str, job: ChildJob) -> Exception:
    if kind == "memory":
        limit = job.memory_limit_bytes
        where = f" of {limit / 2**20:.0f} MiB" if limit is not None else ""
        return TrialOutOfMemory(
            f"training ran out of memory (trial memory limit{where}): {_first_line(text)}"
        )
    if kind == "invalid":
        return InvalidInput(text)
    return TrainingError(f"training failed: {_first_line(text)}")


def _death(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        hint = " (the kernel's out-of-memory killer sends SIGKILL)" if name == "SIGKILL" else ""
        return f"training process was killed by {name}{hint}"
    return f"training process exited with status {exitcode} without a result"


def _first_line(text: str, limit: int = 240) -> str:
    line = text.strip().splitlines()[0] if text.strip() else text
    return line[:limit]
