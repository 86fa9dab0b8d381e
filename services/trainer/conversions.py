"""The trainer's proto <-> domain conversions (no gRPC): a request's architecture, build
parameters and training settings in; data sets, progress and results out.

Unset (zero) fields take the defaults written in common.proto; a request's unset classes
and resolution are its data set's own.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace

from mnas import recipe
from mnas.arch import Architecture, decode
from mnas.build import BuildParams
from mnas.defaults import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_EPOCHS,
    DEFAULT_VALIDATION_EXAMPLES,
    DEFAULT_WIDTH,
)
from mnas.errors import InvalidInput
from mnas.v1 import common_pb2, trainer_pb2
from services.trainer import data
from services.trainer.catalog import Catalog
from services.trainer.datasets import DatasetError, DatasetInfo
from services.trainer.slots import Job
from services.trainer.training import Progress, TrainingConfig, TrainOutcome

__all__ = [
    "architecture_from_proto",
    "build_from_proto",
    "dataset_to_proto",
    "job_from_proto",
    "outcome_to_proto",
    "progress_to_proto",
    "timeout_from_proto",
    "training_config_from_proto",
]


def job_from_proto(request: trainer_pb2.TrainRequest, catalog: Catalog) -> Job:
    """The training a request asks for, on ``catalog``'s data sets.

    :class:`~mnas.errors.InvalidInput` names the bad field. Classes and resolution the
    request leaves unset are read off the data set, so the job says exactly what is built.
    :class:`~services.trainer.datasets.DatasetError` passes through: a data set this
    trainer does not serve, or has but cannot read, is not the request's fault (another
    trainer may serve it).
    """
    try:
        training = training_config_from_proto(request.training)
        return Job(
            arch=architecture_from_proto(request.architecture),
            build=build_from_proto(request.build, lambda: catalog.describe(training.dataset)),
            training=replace(training, dataset=catalog.directory(training.dataset)),
            timeout_seconds=timeout_from_proto(request.training),
            keep_weights=request.training.return_weights,
        )
    except DatasetError:
        raise
    except ValueError as err:
        raise InvalidInput(str(err)) from None


def architecture_from_proto(message: common_pb2.Architecture) -> Architecture:
    """Decode the canonical form; its ``id`` is ignored on input."""
    if not message.canonical.strip():
        raise ValueError("architecture.canonical: empty")
    try:
        return decode(message.canonical)
    except ValueError as err:
        raise ValueError(f"architecture.canonical: {err}") from None


def build_from_proto(
    message: common_pb2.BuildParams, dataset: Callable[[], DatasetInfo]
) -> BuildParams:
    """The build parameters; a zero ``num_classes`` or ``resolution`` takes the data set's
    classes or native resolution (``dataset`` is asked only then), a zero width 1.0.
    ``ValueError`` names the first bad field; ``dataset``'s own errors pass through."""
    if message.num_classes < 0:
        raise ValueError(f"build.num_classes: must be >= 0, got {message.num_classes}")
    if message.resolution < 0:
        raise ValueError(f"build.resolution: must be >= 0, got {message.resolution}")
    if not (math.isfinite(message.width) and message.width >= 0):
        raise ValueError(f"build.width: must be a positive number, got {message.width}")
    num_classes, resolution = message.num_classes, message.resolution
    if not (num_classes and resolution):
        info = dataset()
        num_classes = num_classes or info.classes
        resolution = resolution or info.native_resolution
    build = BuildParams(
        num_classes=num_classes, resolution=resolution, width=message.width or DEFAULT_WIDTH
    )
    build.validate()
    return build


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
