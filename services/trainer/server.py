"""The ``mnas.v1.Trainer`` servicer: proto to domain, :func:`training.train`, domain to proto.

Each accepted ``Train`` call runs its training on a worker thread and streams that
thread's progress reports, then one result. A call ends early when the client cancels,
disconnects or its deadline passes (the training stops within a step), and when the
server stops (the call ends with ``UNAVAILABLE``). At most ``max_concurrent`` trainings
run at once; a call over that is refused with ``RESOURCE_EXHAUSTED``.
"""

from __future__ import annotations

import logging
import math
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import grpc
import torch
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from mnas.arch import Architecture, decode
from mnas.v1 import common_pb2, trainer_pb2, trainer_pb2_grpc
from services.common.server import RunningServer, build_server
from services.trainer import data
from services.trainer.training import (
    Progress,
    TrainingCancelled,
    TrainingConfig,
    TrainOutcome,
    train,
)

__all__ = [
    "SERVICE_NAME",
    "BuildParams",
    "CapacityExhausted",
    "ShuttingDown",
    "TrainerConfig",
    "TrainerMetrics",
    "TrainerServicer",
    "build_params_from_proto",
    "make_server",
    "outcome_to_proto",
    "progress_to_proto",
    "status_for",
    "training_config_from_proto",
]

_logger = logging.getLogger(__name__)

SERVICE_NAME = "mnas.v1.Trainer"

# Proto defaults: a zero (unset) field takes these values.
DEFAULT_EPOCHS = 1
DEFAULT_BATCH_SIZE = 128
DEFAULT_LEARNING_RATE = 0.05
DEFAULT_VALIDATION_EXAMPLES = 10000
DEFAULT_WIDTH = 1.0

_JOB_BUCKETS = (1, 5, 10, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200)
_POLL_SECONDS = 0.5
_JOIN_SECONDS = 10.0


class CapacityExhausted(Exception):
    """Every training slot of this trainer is taken."""


class ShuttingDown(Exception):
    """The trainer is stopping: it takes no new trainings and ends the running ones."""


# The one table from domain errors to status codes; the first matching row wins,
# anything else is INTERNAL.
_STATUS_TABLE: tuple[tuple[type[Exception], grpc.StatusCode], ...] = (
    (CapacityExhausted, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (ShuttingDown, grpc.StatusCode.UNAVAILABLE),
    (TrainingCancelled, grpc.StatusCode.CANCELLED),
    (ValueError, grpc.StatusCode.INVALID_ARGUMENT),
)
_MAX_DETAILS = 300


def status_for(err: Exception) -> tuple[grpc.StatusCode, str]:
    """The status code and details a domain error is reported with."""
    for kind, code in _STATUS_TABLE:
        if isinstance(err, kind):
            return code, _qualify(str(err))[:_MAX_DETAILS]
    return grpc.StatusCode.INTERNAL, f"internal error: {type(err).__name__}: {err}"[:_MAX_DETAILS]


# Fields named by the core's errors, and their path in a TrainRequest.
_FIELD_PATHS = {
    "dataset": "training.dataset",
    "epochs": "training.epochs",
    "steps": "training.steps",
    "batch_size": "training.batch_size",
    "learning_rate": "training.learning_rate",
    "train_examples": "training.train_examples",
    "validation_examples": "training.validation_examples",
    "num_classes": "build.num_classes",
    "resolution": "build.resolution",
    "width": "build.width",
}


def _qualify(message: str) -> str:
    field, sep, rest = message.partition(":")
    if sep and field in _FIELD_PATHS:
        return f"{_FIELD_PATHS[field]}:{rest}"
    return message


# --- configuration and metrics ---------------------------------------------------------


@dataclass(frozen=True)
class TrainerConfig:
    """How a trainer endpoint runs.

    ``device`` is a torch device name or ``"auto"`` (CUDA when present). ``threads`` sets
    torch's intra-op threads (default: torch's own choice). ``drain_seconds``: on stop,
    running trainings may go on this long before they are ended with ``UNAVAILABLE``;
    keep it below the server's stop grace.
    """

    port: int = 0
    host: str = "127.0.0.1"
    max_concurrent: int = 1
    threads: int | None = None
    device: str = "cpu"
    drain_seconds: float = 0.0
    max_workers: int = 32

    def __post_init__(self) -> None:
        if self.max_concurrent < 1:
            raise ValueError(f"max_concurrent: must be >= 1, got {self.max_concurrent}")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads: must be >= 1, got {self.threads}")
        if not self.drain_seconds >= 0:
            raise ValueError(f"drain_seconds: must be >= 0, got {self.drain_seconds}")


class TrainerMetrics:
    """The trainer's job metrics, registered in ``registry``."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.in_flight = Gauge(
            "mnas_trainer_jobs_in_flight", "Trainings running now.", registry=registry
        )
        self.jobs = Counter(
            "mnas_trainer_jobs_total", "Trainings ended, by outcome.", ("outcome",),
            registry=registry,
        )
        self.seconds = Histogram(
            "mnas_trainer_job_seconds", "Wall time of a training, whatever its outcome.",
            buckets=_JOB_BUCKETS, registry=registry,
        )
        self.samples = Counter(
            "mnas_trainer_samples_total", "Training examples processed.", registry=registry
        )
        for outcome in ("completed", "failed", "cancelled"):
            self.jobs.labels(outcome)


# --- proto <-> domain --------------------------------------------------------------------


@dataclass(frozen=True)
class BuildParams:
    """How to instantiate the architecture; ``None`` takes the data set's own value."""

    num_classes: int | None
    resolution: int | None
    width: float


def architecture_from_proto(message: common_pb2.Architecture) -> Architecture:
    """Decode the canonical form; its ``id`` is ignored on input."""
    if not message.canonical.strip():
        raise ValueError("architecture.canonical: empty")
    try:
        return decode(message.canonical)
    except ValueError as err:
        raise ValueError(f"architecture.canonical: {err}") from None


def build_params_from_proto(message: common_pb2.BuildParams) -> BuildParams:
    """Zero fields: the data set's classes and native resolution, width 1.0."""
    if message.num_classes < 0:
        raise ValueError(f"build.num_classes: must be >= 0, got {message.num_classes}")
    if message.resolution < 0:
        raise ValueError(f"build.resolution: must be >= 0, got {message.resolution}")
    if not (math.isfinite(message.width) and message.width >= 0):
        raise ValueError(f"build.width: must be a positive number, got {message.width}")
    return BuildParams(
        num_classes=message.num_classes or None,
        resolution=message.resolution or None,
        width=message.width or DEFAULT_WIDTH,
    )


def training_config_from_proto(message: common_pb2.Training) -> TrainingConfig:
    """Zero fields take the documented defaults (see ``common.proto``)."""
    try:
        return TrainingConfig(
            dataset=message.dataset or data.FASHION_MNIST,
            epochs=message.epochs or DEFAULT_EPOCHS,
            steps=message.steps,
            batch_size=message.batch_size or DEFAULT_BATCH_SIZE,
            learning_rate=message.learning_rate or DEFAULT_LEARNING_RATE,
            seed=message.seed,
            train_examples=message.train_examples,
            validation_examples=message.validation_examples or DEFAULT_VALIDATION_EXAMPLES,
        )
    except ValueError as err:
        raise ValueError(f"training.{err}") from None


def progress_to_proto(progress: Progress) -> common_pb2.TrainProgress:
    return common_pb2.TrainProgress(
        step=progress.step,
        total_steps=progress.total_steps,
        epoch=progress.epoch,
        loss=progress.loss,
        samples_seen=progress.samples_seen,
        seconds=progress.seconds,
    )


def outcome_to_proto(outcome: TrainOutcome) -> common_pb2.TrainResult:
    return common_pb2.TrainResult(
        accuracy=outcome.accuracy,
        loss=outcome.loss,
        seconds=outcome.seconds,
        samples_seen=outcome.samples_seen,
    )


# --- the servicer ------------------------------------------------------------------------


@dataclass(frozen=True)
class _Job:
    arch: Architecture
    build: BuildParams
    training: TrainingConfig


@dataclass(frozen=True)
class _Done:
    outcome: TrainOutcome | None = None
    error: Exception | None = None


class TrainerServicer(trainer_pb2_grpc.TrainerServicer):
    """``Train`` and ``GetCapacity`` over :func:`services.trainer.training.train`."""

    def __init__(self, config: TrainerConfig, metrics: TrainerMetrics) -> None:
        self._config = config
        self._metrics = metrics
        self._device = _resolve_device(config.device)
        self._lock = threading.Lock()
        self._in_flight = 0
        self._stopping = threading.Event()  # refuse new trainings
        self._cancel_all = threading.Event()  # end running trainings

    @property
    def in_flight(self) -> int:
        with self._lock:
            return self._in_flight

    def begin_shutdown(self) -> None:
        """Refuse new trainings; end running ones after ``drain_seconds``."""
        _logger.info("shutting down: %d training(s) running, drain %.1fs",
                     self.in_flight, self._config.drain_seconds)
        self._stopping.set()
        if self._config.drain_seconds > 0:
            timer = threading.Timer(self._config.drain_seconds, self._cancel_all.set)
            timer.daemon = True
            timer.start()
        else:
            self._cancel_all.set()

    def GetCapacity(
        self, request: common_pb2.GetCapacityRequest, context: grpc.ServicerContext
    ) -> common_pb2.GetCapacityResponse:
        return common_pb2.GetCapacityResponse(
            max_concurrent=self._config.max_concurrent,
            in_flight=self.in_flight,
            hardware=_hardware(self._device, self._config.threads),
        )

    def Train(
        self, request: trainer_pb2.TrainRequest, context: grpc.ServicerContext
    ) -> Iterator[trainer_pb2.TrainResponse]:
        try:
            job = _Job(
                arch=architecture_from_proto(request.architecture),
                build=build_params_from_proto(request.build),
                training=training_config_from_proto(request.training),
            )
            self._acquire()
            yield from self._stream(job, context)
        except Exception as err:
            code, details = status_for(err)
            if code is grpc.StatusCode.INTERNAL:
                _logger.error("Train failed", exc_info=err)
            context.abort(code, details)

    def _acquire(self) -> None:
        if self._stopping.is_set():
            raise ShuttingDown("trainer is shutting down; train elsewhere")
        with self._lock:
            if self._in_flight >= self._config.max_concurrent:
                raise CapacityExhausted(
                    f"trainer busy: {self._in_flight} of {self._config.max_concurrent} "
                    "training slots in use"
                )
            self._in_flight += 1
        self._metrics.in_flight.inc()

    def _release(self) -> None:
        with self._lock:
            self._in_flight -= 1
        self._metrics.in_flight.dec()

    def _stream(
        self, job: _Job, context: grpc.ServicerContext
    ) -> Iterator[trainer_pb2.TrainResponse]:
        """Run ``job`` on a worker thread (which owns the slot) and relay its events."""
        events: queue.Queue[Progress | _Done] = queue.Queue()
        client_gone = threading.Event()
        context.add_callback(client_gone.set)

        def cancelled() -> bool:
            return client_gone.is_set() or self._cancel_all.is_set()

        worker = threading.Thread(
            target=self._work, args=(job, events, cancelled), name=f"train-{job.arch.id}",
            daemon=True,
        )
        try:
            worker.start()
        except BaseException:
            self._release()
            raise
        try:
            while True:
                try:
                    event = events.get(timeout=_POLL_SECONDS)
                except queue.Empty:
                    if not context.is_active():
                        client_gone.set()
                    continue
                if isinstance(event, Progress):
                    yield trainer_pb2.TrainResponse(progress=progress_to_proto(event))
                    continue
                if event.error is not None:
                    raise event.error
                assert event.outcome is not None
                yield trainer_pb2.TrainResponse(result=outcome_to_proto(event.outcome))
                return
        finally:
            client_gone.set()  # no-op when the training already ended
            worker.join(_JOIN_SECONDS)

    def _work(
        self, job: _Job, events: queue.Queue[Progress | _Done], cancelled: Callable[[], bool]
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
            outcome = train(
                job.arch,
                num_classes=job.build.num_classes,
                resolution=job.build.resolution,
                width=job.build.width,
                config=job.training,
                on_progress=on_progress,
                cancelled=cancelled,
                threads=self._config.threads,
                device=self._device,
            )
            self._metrics.samples.inc(max(0, outcome.samples_seen - reported))
            label, done = "completed", _Done(outcome=outcome)
        except TrainingCancelled as err:
            if self._cancel_all.is_set():
                label, done = "cancelled", _Done(error=ShuttingDown(
                    "trainer shut down during the training; train elsewhere"))
            else:
                label, done = "cancelled", _Done(error=err)
            _logger.info("training of %s cancelled", job.arch.id)
        except Exception as err:
            label, done = "failed", _Done(error=err)
            if not isinstance(err, ValueError):
                _logger.error("training of %s failed", job.arch.id, exc_info=err)
        finally:
            self._metrics.seconds.observe(time.perf_counter() - start)
            self._release()
        self._metrics.jobs.labels(label).inc()
        events.put(done)


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


def _hardware(device: torch.device, threads: int | None) -> str:
    version = f"torch {torch.__version__}"
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return f"cuda:{index} {torch.cuda.get_device_name(index)} ({version})"
    return f"cpu x{threads or torch.get_num_threads()} ({version})"


def make_server(config: TrainerConfig, registry: CollectorRegistry) -> RunningServer:
    """Start a trainer on ``config.host:config.port`` (0: a free port)."""
    servicer = TrainerServicer(config, TrainerMetrics(registry))
    running = build_server(
        service_names=[SERVICE_NAME],
        add_servicers=lambda server: trainer_pb2_grpc.add_TrainerServicer_to_server(
            servicer, server
        ),
        registry=registry,
        port=config.port,
        host=config.host,
        max_workers=config.max_workers,
    )
    running.on_stop.append(servicer.begin_shutdown)
    return running
