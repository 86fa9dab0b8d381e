"""The trainer's training slots: where each training runs and who holds them.

Slots: one per GPU on CUDA (slot ``i`` trains on ``cuda:i``), else ``max_concurrent`` on
one device; a job over them is refused with :class:`CapacityExhausted`. A job takes a free
slot and trains on a worker thread, in a child process of its own
(:mod:`services.trainer.isolation`) unless isolation is off, while its caller reads the
progress reports and then the outcome. It ends early when the caller goes away and when
the trainer stops: new jobs are refused at once (:class:`ShuttingDown`), running ones
ended after the drain.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass

import torch

from mnas.arch import Architecture
from mnas.build import BuildParams
from mnas.errors import InvalidInput
from services.trainer.cores import threads_per_slot, threads_to_use
from services.trainer.isolation import ChildJob, TrialFailed, run_isolated
from services.trainer.metrics import TrainerMetrics
from services.trainer.training import (
    Progress,
    TrainingCancelled,
    TrainingConfig,
    TrainOutcome,
    train,
)

__all__ = ["CapacityExhausted", "Job", "ShuttingDown", "Slots"]

_logger = logging.getLogger(__name__)

_POLL_SECONDS = 0.5
_JOIN_SECONDS = 10.0


class CapacityExhausted(Exception):
    """Every training slot of this trainer is taken."""


class ShuttingDown(Exception):
    """The trainer is stopping: it takes no new trainings and ends the running ones."""


@dataclass(frozen=True)
class Job:
    """One training: ``build`` is exactly what is built (the data set's classes and
    resolution filled in), ``training.dataset`` the directory to read."""

    arch: Architecture
    build: BuildParams
    training: TrainingConfig
    timeout_seconds: float | None = None
    keep_weights: bool = False


@dataclass(frozen=True)
class _Done:
    outcome: TrainOutcome | None = None
    error: Exception | None = None


class Slots:
    """The training slots of one trainer and the jobs running in them.

    ``device`` is a torch device name or ``"auto"``; ``threads`` the most torch intra-op
    threads a training gets (default: the usable cores shared among the slots);
    ``memory_limit_bytes`` how much more memory a CPU trial's process may map (default:
    physical memory divided among the slots); ``isolate`` False trains on threads of this
    process; ``drain_seconds`` how long running jobs go on after :meth:`begin_shutdown`.
    """

    def __init__(
        self,
        metrics: TrainerMetrics,
        *,
        device: str,
        max_concurrent: int,
        threads: int | None,
        memory_limit_bytes: int | None,
        isolate: bool,
        drain_seconds: float,
    ) -> None:
        self._metrics = metrics
        self._isolate = isolate
        self._drain_seconds = drain_seconds
        self._devices = _slot_devices(_resolve_device(device), max_concurrent)
        self._threads = threads or threads_per_slot(len(self._devices))
        self._memory_limit = memory_limit_bytes
        if self._memory_limit is None and self._devices[0].type == "cpu":
            self._memory_limit = _physical_memory() // len(self._devices)
        self._lock = threading.Lock()
        self._free = list(range(len(self._devices)))
        self._stopping = threading.Event()  # refuse new trainings
        self._cancel_all = threading.Event()  # end running trainings

    @property
    def in_flight(self) -> int:
        with self._lock:
            return len(self._devices) - len(self._free)

    @property
    def capacity(self) -> int:
        return len(self._devices)

    @property
    def threads(self) -> int:
        """The most torch intra-op threads a training gets."""
        return self._threads

    def hardware(self) -> str:
        """The slots' devices and the torch release, for ``GetCapacity``."""
        return _hardware(self._devices, self._threads)

    def begin_shutdown(self) -> None:
        """Refuse new trainings; end running ones after ``drain_seconds``."""
        _logger.info(
            "shutting down: %d training(s) running, drain %.1fs",
            self.in_flight,
            self._drain_seconds,
        )
        self._stopping.set()
        if self._drain_seconds > 0:
            timer = threading.Timer(self._drain_seconds, self._cancel_all.set)
            timer.daemon = True
            timer.start()
        else:
            self._cancel_all.set()

    def run(
        self, job: Job, client_gone: threading.Event, is_active: Callable[[], bool]
    ) -> Generator[Progress | TrainOutcome, None, None]:
        """Take a slot and train ``job``: its progress reports, then its outcome; its
        error raised. The training ends early once ``client_gone`` is set or
        ``is_active()`` turns false; closing the iterator ends it too."""
        slot = self._acquire()
        events: queue.Queue[Progress | _Done] = queue.Queue()

        def cancelled() -> bool:
            return client_gone.is_set() or self._cancel_all.is_set()

        worker = threading.Thread(
            target=self._work,
            args=(job, slot, events, cancelled),
            name=f"train-{job.arch.id}",
            daemon=True,
        )
        try:
            worker.start()
        except BaseException:
            self._release(slot)
            raise
        try:
            while True:
                try:
                    event = events.get(timeout=_POLL_SECONDS)
                except queue.Empty:
                    if not is_active():
                        client_gone.set()
                    continue
                if isinstance(event, Progress):
                    yield event
                    continue
                if event.error is not None:
                    raise event.error
                assert event.outcome is not None
                yield event.outcome
                return
        finally:
            client_gone.set()  # no-op when the training already ended
            worker.join(_JOIN_SECONDS)

    def _acquire(self) -> int:
        if self._stopping.is_set():
            raise ShuttingDown("trainer is shutting down; train elsewhere")
        with self._lock:
            if not self._free:
                raise CapacityExhausted(
                    f"trainer busy: all {len(self._devices)} training slots in use"
                )
            slot = self._free.pop(0)
        self._metrics.in_flight.inc()
        return slot

    def _release(self, slot: int) -> None:
        with self._lock:
            self._free.append(slot)
            self._free.sort()
        self._metrics.in_flight.dec()

    def _work(
        self,
        job: Job,
        slot: int,
        events: queue.Queue[Progress | _Done],
        cancelled: Callable[[], bool],
    ) -> None:
        """Train ``job``; free its slot, then post the outcome (so a client that got the
        result can start the next training at once)."""
        start = time.perf_counter()
        reported = 0

        def on_progress(progress: Progress) -> None:
            nonlocal reported
            self._metrics.samples.inc(progress.samples_seen - reported)
            reported = progress.samples_seen
            events.put(progress)

        done: _Done
        try:
            outcome = self._train(job, self._devices[slot], on_progress, cancelled)
            self._metrics.samples.inc(max(0, outcome.samples_seen - reported))
            label, done = "completed", _Done(outcome=outcome)
        except TrainingCancelled as err:
            if self._cancel_all.is_set():
                label, done = (
                    "cancelled",
                    _Done(
                        error=ShuttingDown("trainer shut down during the training; train elsewhere")
                    ),
                )
            else:
                label, done = "cancelled", _Done(error=err)
            _logger.info("training of %s cancelled", job.arch.id)
        except TrialFailed as err:
            label, done = "failed", _Done(error=err)
            _logger.warning("training of %s failed: %s", job.arch.id, err)
        except Exception as err:
            label, done = "failed", _Done(error=err)
            if not isinstance(err, InvalidInput):
                _logger.error("training of %s failed", job.arch.id, exc_info=err)
        finally:
            self._metrics.seconds.observe(time.perf_counter() - start)
            self._release(slot)
        self._metrics.jobs.labels(label).inc()
        events.put(done)

    def _train(
        self,
        job: Job,
        device: torch.device,
        on_progress: Callable[[Progress], None],
        cancelled: Callable[[], bool],
    ) -> TrainOutcome:
        threads = self._threads
        if device.type == "cpu":
            threads = threads_to_use(self._threads)
            _logger.debug("training %s on %d of %d threads", job.arch.id, threads, self._threads)
        if not self._isolate:
            return train(
                job.arch,
                num_classes=job.build.num_classes,
                resolution=job.build.resolution,
                width=job.build.width,
                config=job.training,
                on_progress=on_progress,
                cancelled=cancelled,
                threads=threads,
                device=device,
                keep_weights=job.keep_weights,
            )
        child = ChildJob(
            arch=job.arch,
            num_classes=job.build.num_classes,
            resolution=job.build.resolution,
            width=job.build.width,
            config=job.training,
            device=str(device),
            threads=threads,
            keep_weights=job.keep_weights,
            memory_limit_bytes=self._memory_limit if device.type == "cpu" else None,
        )
        return run_isolated(
            child, on_progress=on_progress, cancelled=cancelled, timeout_seconds=job.timeout_seconds
        )


def _slot_devices(device: torch.device, max_concurrent: int) -> list[torch.device]:
    """The device of every slot: one per GPU for plain ``cuda``, else ``max_concurrent``
    slots on ``device``."""
    if device.type == "cuda" and device.index is None:
        return [torch.device("cuda", i) for i in range(torch.cuda.device_count())]
    return [device] * max_concurrent


def _physical_memory() -> int:
    return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


def _resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise ValueError(f"device: {err}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device: {name!r} asked for but CUDA is not available")
    return device


def _hardware(devices: list[torch.device], threads: int) -> str:
    version = f"torch {torch.__version__}"
    if devices[0].type == "cuda":
        names = sorted(
            {f"cuda:{d.index or 0} {torch.cuda.get_device_name(d.index or 0)}" for d in devices}
        )
        return f"{', '.join(names)} ({version})"
    return f"cpu x{threads} ({version})"
