"""The ``mnas.v1.Trainer`` servicer: proto to domain, :func:`training.train`, domain to proto.

Each accepted ``Train`` call takes a slot and trains in a child process of its own
(:mod:`services.trainer.isolation`), streaming the child's progress reports, then one
result, then the trained weights in chunks when the request asks for them. A trial that
runs out of memory, crashes or outlives ``training.timeout_seconds`` ends with
``ABORTED`` and the trainer serves on. A call ends early when the client cancels,
disconnects or its deadline passes (the child is killed at once), and when the server
stops (``UNAVAILABLE``). Slots: one per GPU on CUDA (slot ``i`` trains on ``cuda:i``),
else ``max_concurrent``; a call over them is refused with ``RESOURCE_EXHAUSTED``.
"""

from __future__ import annotations

import logging
import math
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import grpc
import torch
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from mnas import recipe
from mnas.arch import Architecture, decode
from mnas.errors import InvalidInput
from mnas.tls import ServerTLS
from mnas.v1 import common_pb2, trainer_pb2, trainer_pb2_grpc
from services.common.errors import MAX_DETAILS, StatusTable
from services.common.server import RunningServer, build_server
from services.trainer import data
from services.trainer.catalog import Catalog, DatasetNotServed
from services.trainer.cores import threads_per_slot, threads_to_use
from services.trainer.datasets import DatasetInfo
from services.trainer.isolation import ChildJob, TrialFailed, run_isolated, start_fork_server
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
    "dataset_to_proto",
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
WEIGHTS_CHUNK_BYTES = 1 << 20
DEFAULT_VALIDATION_EXAMPLES = 10000
DEFAULT_WIDTH = 1.0

_JOB_BUCKETS = (1, 5, 10, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200)
_POLL_SECONDS = 0.5
_JOIN_SECONDS = 10.0


class CapacityExhausted(Exception):
    """Every training slot of this trainer is taken."""


class ShuttingDown(Exception):
    """The trainer is stopping: it takes no new trainings and ends the running ones."""


def _describe(err: Exception) -> str:
    """A known error's message, its field named by its path in a TrainRequest."""
    return _qualify(str(err))[:MAX_DETAILS]


_STATUS_TABLE = StatusTable.of(
    (CapacityExhausted, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (ShuttingDown, grpc.StatusCode.UNAVAILABLE),
    (TrainingCancelled, grpc.StatusCode.CANCELLED),
    (TrialFailed, grpc.StatusCode.ABORTED),
    (DatasetNotServed, grpc.StatusCode.NOT_FOUND),  # another trainer may serve it
    describe=_describe,
)


def status_for(err: Exception) -> tuple[grpc.StatusCode, str]:
    """The status code and details a domain error is reported with."""
    return _STATUS_TABLE.status(err)


# Fields named by the core's errors, and their path in a TrainRequest.
_FIELD_PATHS = {
    "dataset": "training.dataset",
    "epochs": "training.epochs",
    "steps": "training.steps",
    "batch_size": "training.batch_size",
    "learning_rate": "training.learning_rate",
    "train_examples": "training.train_examples",
    "validation_examples": "training.validation_examples",
    "optimizer": "training.optimizer",
    "momentum": "training.momentum",
    "weight_decay": "training.weight_decay",
    "label_smoothing": "training.label_smoothing",
    "warmup_fraction": "training.warmup_fraction",
    "schedule": "training.schedule",
    "evaluate_every_steps": "training.evaluate_every_steps",
    "evaluation_examples": "training.evaluation_examples",
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

    ``device`` is a torch device name or ``"auto"`` (CUDA when present); on CUDA there is
    one slot per visible GPU unless ``device`` names one (``cuda:N``: ``max_concurrent``
    slots on it). ``threads`` is the most torch intra-op threads a training gets (default:
    the cores this process may use, :func:`~services.trainer.cores.usable_cores`, shared
    among the slots); a CPU training gets fewer when fewer cores are idle as it starts
    (:func:`~services.trainer.cores.threads_to_use`), since a thread on a busy core makes
    every step wait for it.
    ``drain_seconds``: on stop, running trainings may go on this long before they are
    ended with ``UNAVAILABLE``; keep it below the server's stop grace.
    ``memory_limit_bytes``: how much more memory a CPU trial's process may map than it
    starts with (default: physical memory divided among the slots); ``isolate`` False
    trains on threads of this process instead (no limits; for debugging).
    ``datasets`` names data set directories (``--dataset NAME=DIR``) beside the built-in
    ``fashion-mnist``; ``preload_datasets`` (names or directories) are decoded once in the
    fork server, so trials start faster. ``data_roots``: directories inside which a
    request's ``training.dataset`` may name a directory by path (none: names only).
    ``tls`` and ``health_port``: as
    :func:`~services.common.server.build_server` takes them.
    """

    port: int = 0
    host: str = "127.0.0.1"
    max_concurrent: int = 1
    threads: int | None = None
    device: str = "cpu"
    drain_seconds: float = 0.0
    max_workers: int = 32
    memory_limit_bytes: int | None = None
    isolate: bool = True
    preload_datasets: tuple[str, ...] = ()
    datasets: tuple[tuple[str, Path], ...] = ()
    tls: ServerTLS | None = None
    health_port: int | None = None
    data_roots: tuple[Path, ...] = ()

    def __post_init__(self) -> None:
        if self.max_concurrent < 1:
            raise ValueError(f"max_concurrent: must be >= 1, got {self.max_concurrent}")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads: must be >= 1, got {self.threads}")
        if not self.drain_seconds >= 0:
            raise ValueError(f"drain_seconds: must be >= 0, got {self.drain_seconds}")
        if self.memory_limit_bytes is not None and self.memory_limit_bytes < 1:
            raise ValueError(f"memory_limit_bytes: must be >= 1, got {self.memory_limit_bytes}")


class TrainerMetrics:
    """The trainer's job metrics, registered in ``registry``."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.in_flight = Gauge(
            "mnas_trainer_jobs_in_flight", "Trainings running now.", registry=registry
        )
        self.jobs = Counter(
            "mnas_trainer_jobs_total",
            "Trainings ended, by outcome.",
            ("outcome",),
            registry=registry,
        )
        self.seconds = Histogram(
            "mnas_trainer_job_seconds",
            "Wall time of a training, whatever its outcome.",
            buckets=_JOB_BUCKETS,
            registry=registry,
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


_OPTIMIZERS = {
    common_pb2.OPTIMIZER_UNSPECIFIED: "sgd",
    common_pb2.OPTIMIZER_SGD: "sgd",
    common_pb2.OPTIMIZER_RMSPROP: "rmsprop",
}
_SCHEDULES = {
    common_pb2.LEARNING_RATE_SCHEDULE_UNSPECIFIED: "cosine",
    common_pb2.LEARNING_RATE_SCHEDULE_COSINE: "cosine",
    common_pb2.LEARNING_RATE_SCHEDULE_EXPONENTIAL: "exponential",
    common_pb2.LEARNING_RATE_SCHEDULE_CONSTANT: "constant",
}


def training_config_from_proto(message: common_pb2.Training) -> TrainingConfig:
    """Zero fields take the documented defaults (see ``common.proto``)."""
    if message.optimizer not in _OPTIMIZERS:
        raise ValueError(f"training.optimizer: unknown value {message.optimizer}")
    if message.schedule not in _SCHEDULES:
        raise ValueError(f"training.schedule: unknown value {message.schedule}")
    optimizer = _OPTIMIZERS[message.optimizer]
    batch_size = message.batch_size or DEFAULT_BATCH_SIZE
    defaults = recipe.optimizer_defaults(optimizer, batch_size)
    try:
        return TrainingConfig(
            dataset=message.dataset or data.FASHION_MNIST,
            epochs=message.epochs or DEFAULT_EPOCHS,
            steps=message.steps,
            batch_size=batch_size,
            learning_rate=message.learning_rate or defaults["learning_rate"],
            seed=message.seed,
            train_examples=message.train_examples,
            validation_examples=message.validation_examples or DEFAULT_VALIDATION_EXAMPLES,
            optimizer=optimizer,
            momentum=message.momentum if message.HasField("momentum") else recipe.MOMENTUM,
            weight_decay=message.weight_decay if message.HasField("weight_decay") else None,
            label_smoothing=(
                message.label_smoothing
                if message.HasField("label_smoothing")
                else recipe.LABEL_SMOOTHING
            ),
            warmup_fraction=(
                message.warmup_fraction
                if message.HasField("warmup_fraction")
                else defaults["warmup_fraction"]
            ),
            schedule=_SCHEDULES[message.schedule],
            evaluate_every_steps=message.evaluate_every_steps,
            evaluation_examples=message.evaluation_examples or recipe.EVALUATION_EXAMPLES,
        )
    except ValueError as err:
        raise ValueError(f"training.{err}") from None


def timeout_from_proto(message: common_pb2.Training) -> float | None:
    if not (math.isfinite(message.timeout_seconds) and message.timeout_seconds >= 0):
        raise ValueError(
            f"training.timeout_seconds: must be a number >= 0, got {message.timeout_seconds}"
        )
    return message.timeout_seconds or None


def dataset_to_proto(info: DatasetInfo) -> trainer_pb2.Dataset:
    return trainer_pb2.Dataset(
        name=info.name,
        format=info.format,
        classes=info.classes,
        resolution=info.native_resolution,
        examples=info.examples,
        channels=info.channels,
    )


def progress_to_proto(progress: Progress) -> common_pb2.TrainProgress:
    return common_pb2.TrainProgress(
        step=progress.step,
        total_steps=progress.total_steps,
        epoch=progress.epoch,
        loss=progress.loss,
        samples_seen=progress.samples_seen,
        seconds=progress.seconds,
        accuracy=progress.accuracy,
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
    timeout_seconds: float | None = None
    keep_weights: bool = False


@dataclass(frozen=True)
class _Done:
    outcome: TrainOutcome | None = None
    error: Exception | None = None


class TrainerServicer(trainer_pb2_grpc.TrainerServicer):
    """``Train`` and ``GetCapacity`` over :func:`services.trainer.training.train`."""

    def __init__(
        self, config: TrainerConfig, metrics: TrainerMetrics, catalog: Catalog | None = None
    ) -> None:
        self._config = config
        self._metrics = metrics
        self._catalog = catalog or Catalog.from_entries(config.datasets, config.data_roots)
        self._devices = _slot_devices(_resolve_device(config.device), config.max_concurrent)
        self._threads = config.threads or threads_per_slot(len(self._devices))
        self._memory_limit = config.memory_limit_bytes
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

    def begin_shutdown(self) -> None:
        """Refuse new trainings; end running ones after ``drain_seconds``."""
        _logger.info(
            "shutting down: %d training(s) running, drain %.1fs",
            self.in_flight,
            self._config.drain_seconds,
        )
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
            max_concurrent=self.capacity,
            in_flight=self.in_flight,
            hardware=_hardware(self._devices, self._threads),
        )

    def ListDatasets(
        self, request: trainer_pb2.ListDatasetsRequest, context: grpc.ServicerContext
    ) -> trainer_pb2.ListDatasetsResponse:
        offered = self._catalog.offered()
        response = trainer_pb2.ListDatasetsResponse(
            datasets=[dataset_to_proto(info) for info in offered]
        )
        if request.name and all(info.name != request.name for info in offered):
            try:
                response.datasets.append(dataset_to_proto(self._catalog.describe(request.name)))
            except (ValueError, OSError) as err:
                response.problem = str(err)[:MAX_DETAILS]
        return response

    def Train(
        self, request: trainer_pb2.TrainRequest, context: grpc.ServicerContext
    ) -> Iterator[trainer_pb2.TrainResponse]:
        try:
            job = self._job(request)
            slot = self._acquire()
            yield from self._stream(job, slot, context)
        except Exception as err:
            _STATUS_TABLE.abort(context, err, logger=_logger, call="Train")

    def _job(self, request: trainer_pb2.TrainRequest) -> _Job:
        """The request, validated: :class:`InvalidInput` names the bad field."""
        try:
            training = training_config_from_proto(request.training)
            return _Job(
                arch=architecture_from_proto(request.architecture),
                build=build_params_from_proto(request.build),
                training=replace(training, dataset=self._catalog.directory(training.dataset)),
                timeout_seconds=timeout_from_proto(request.training),
                keep_weights=request.training.return_weights,
            )
        except DatasetNotServed:
            raise
        except ValueError as err:
            raise InvalidInput(str(err)) from None

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

    def _stream(
        self, job: _Job, slot: int, context: grpc.ServicerContext
    ) -> Iterator[trainer_pb2.TrainResponse]:
        """Run ``job`` on a worker thread (which owns the slot) and relay its events."""
        events: queue.Queue[Progress | _Done] = queue.Queue()
        client_gone = threading.Event()
        context.add_callback(client_gone.set)

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
                if job.keep_weights and event.outcome.weights is not None:
                    yield from _weights_chunks(event.outcome.weights)
                return
        finally:
            client_gone.set()  # no-op when the training already ended
            worker.join(_JOIN_SECONDS)

    def _work(
        self,
        job: _Job,
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
        job: _Job,
        device: torch.device,
        on_progress: Callable[[Progress], None],
        cancelled: Callable[[], bool],
    ) -> TrainOutcome:
        threads = self._threads
        if device.type == "cpu":
            threads = threads_to_use(self._threads)
            _logger.debug("training %s on %d of %d threads", job.arch.id, threads, self._threads)
        if not self._config.isolate:
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


def _preload_directory(catalog: Catalog, name: str) -> str:
    """The directory to preload for ``name``; "" (with a warning) when there is none."""
    try:
        return catalog.directory(name)
    except ValueError as err:
        _logger.warning("not preloading %r: %s", name, err)
        return ""


def _weights_chunks(weights: bytes) -> Iterator[trainer_pb2.TrainResponse]:
    total = len(weights)
    for offset in range(0, total, WEIGHTS_CHUNK_BYTES):
        yield trainer_pb2.TrainResponse(
            weights=common_pb2.WeightsChunk(
                data=weights[offset : offset + WEIGHTS_CHUNK_BYTES],
                offset=offset,
                total_bytes=total,
            )
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


def make_server(config: TrainerConfig, registry: CollectorRegistry) -> RunningServer:
    """Start a trainer on ``config.host:config.port`` (0: a free port)."""
    catalog = Catalog.from_entries(config.datasets, config.data_roots)
    servicer = TrainerServicer(config, TrainerMetrics(registry), catalog)
    if config.isolate:
        preload = [_preload_directory(catalog, name) for name in config.preload_datasets]
        start_fork_server([p for p in preload if p])  # before the server's threads exist
    running = build_server(
        service_names=[SERVICE_NAME],
        add_servicers=lambda server: trainer_pb2_grpc.add_TrainerServicer_to_server(
            servicer, server
        ),
        registry=registry,
        port=config.port,
        host=config.host,
        max_workers=config.max_workers,
        tls=config.tls,
        health_port=config.health_port,
    )
    running.on_stop.append(servicer.begin_shutdown)
    return running
