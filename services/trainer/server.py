"""The ``mnas.v1.Trainer`` servicer: a request to a job (:mod:`~services.trainer.conversions`),
the job to its slots, progress and the result back; domain errors to status codes.

Each accepted ``Train`` call takes a slot and trains in a child process of its own
(:mod:`services.trainer.isolation`), streaming the child's progress reports, then one
result, then the trained weights in chunks when the request asks for them. A trial that
runs out of memory, crashes or outlives ``training.timeout_seconds`` ends with
``ABORTED`` and the trainer serves on. A call ends early when the client cancels,
disconnects or its deadline passes (the child is killed at once), and when the server
stops (``UNAVAILABLE``). The slots and the jobs in them are
:class:`~services.trainer.slots.Slots`; a call over them is refused with
``RESOURCE_EXHAUSTED``.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
from prometheus_client import CollectorRegistry

from mnas.tls import ServerTLS
from mnas.v1 import common_pb2, trainer_pb2, trainer_pb2_grpc
from services.common.errors import MAX_DETAILS, StatusTable
from services.common.server import RunningServer, build_server
from services.trainer.catalog import Catalog, DatasetNotServed
from services.trainer.conversions import (
    dataset_to_proto,
    job_from_proto,
    outcome_to_proto,
    progress_to_proto,
)
from services.trainer.isolation import TrialFailed, start_fork_server
from services.trainer.metrics import TrainerMetrics
from services.trainer.slots import CapacityExhausted, ShuttingDown, Slots
from services.trainer.training import Progress, TrainingCancelled

__all__ = [
    "SERVICE_NAME",
    "CapacityExhausted",
    "ShuttingDown",
    "TrainerConfig",
    "TrainerMetrics",
    "TrainerServicer",
    "make_server",
    "status_for",
]

_logger = logging.getLogger(__name__)

SERVICE_NAME = "mnas.v1.Trainer"

WEIGHTS_CHUNK_BYTES = 1 << 20


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


# --- configuration ---------------------------------------------------------------------


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


# --- the servicer ------------------------------------------------------------------------


class TrainerServicer(trainer_pb2_grpc.TrainerServicer):
    """``Train``, ``GetCapacity`` and ``ListDatasets`` over the trainer's
    :class:`~services.trainer.slots.Slots` and :class:`~services.trainer.catalog.Catalog`."""

    def __init__(
        self, config: TrainerConfig, metrics: TrainerMetrics, catalog: Catalog | None = None
    ) -> None:
        self._catalog = catalog or Catalog.from_entries(config.datasets, config.data_roots)
        self._slots = Slots(
            metrics,
            device=config.device,
            max_concurrent=config.max_concurrent,
            threads=config.threads,
            memory_limit_bytes=config.memory_limit_bytes,
            isolate=config.isolate,
            drain_seconds=config.drain_seconds,
        )

    @property
    def threads(self) -> int:
        """The most torch intra-op threads a training gets."""
        return self._slots.threads

    def begin_shutdown(self) -> None:
        """Refuse new trainings; end running ones after ``drain_seconds``."""
        self._slots.begin_shutdown()

    def GetCapacity(
        self, request: common_pb2.GetCapacityRequest, context: grpc.ServicerContext
    ) -> common_pb2.GetCapacityResponse:
        return common_pb2.GetCapacityResponse(
            max_concurrent=self._slots.capacity,
            in_flight=self._slots.in_flight,
            hardware=self._slots.hardware(),
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
            job = job_from_proto(request, self._catalog)
            client_gone = threading.Event()
            context.add_callback(client_gone.set)
            events = self._slots.run(job, client_gone, context.is_active)
            with contextlib.closing(events):
                for event in events:
                    if isinstance(event, Progress):
                        yield trainer_pb2.TrainResponse(progress=progress_to_proto(event))
                        continue
                    yield trainer_pb2.TrainResponse(result=outcome_to_proto(event))
                    if job.keep_weights and event.weights is not None:
                        yield from _weights_chunks(event.weights)
        except Exception as err:
            _STATUS_TABLE.abort(context, err, logger=_logger, call="Train")


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
