"""The trainer's proto <-> domain conversions: defaults of unset fields, the data set's
own classes and resolution for an unset build, and which errors are the request's."""

from __future__ import annotations

from pathlib import Path

import pytest

from mnas.build import BuildParams
from mnas.errors import InvalidInput
from mnas.v1 import common_pb2, trainer_pb2
from services.trainer.catalog import Catalog, DatasetNotServed
from services.trainer.conversions import (
    build_from_proto,
    job_from_proto,
    training_config_from_proto,
)
from services.trainer.datasets import DatasetError, DatasetInfo

TINY = "stem:8 r1_k3_s11_e1_i8_o8 head:16"
CIFAR_LIKE = DatasetInfo(
    name="cifar-like", format="cifar", classes=100, examples=50000, native_resolution=32,
    channels=3,
)  # fmt: skip


def _unasked() -> DatasetInfo:
    raise AssertionError("the data set was read though the request set every field")


def test_zero_training_fields_take_the_defaults() -> None:
    config = training_config_from_proto(common_pb2.Training())
    assert (config.dataset, config.epochs, config.steps, config.batch_size) == (
        "fashion-mnist",
        1,
        0,
        128,
    )
    assert (config.learning_rate, config.validation_examples, config.train_examples) == (
        0.05,
        10000,
        0,
    )


def test_an_unset_build_takes_the_data_sets_classes_and_resolution() -> None:
    assert build_from_proto(common_pb2.BuildParams(), lambda: CIFAR_LIKE) == BuildParams(
        num_classes=100, resolution=32, width=1.0
    )
    partial = common_pb2.BuildParams(resolution=64, width=0.5)
    assert build_from_proto(partial, lambda: CIFAR_LIKE) == BuildParams(100, 64, 0.5)
    full = common_pb2.BuildParams(num_classes=12, resolution=40, width=1.4)
    assert build_from_proto(full, _unasked) == BuildParams(12, 40, 1.4)


@pytest.mark.parametrize(
    ("message", "field"),
    [
        (common_pb2.BuildParams(num_classes=-1), "build.num_classes"),
        (common_pb2.BuildParams(resolution=-3), "build.resolution"),
        (common_pb2.BuildParams(width=-1.0), "build.width"),
        (common_pb2.BuildParams(width=float("nan")), "build.width"),
        (common_pb2.BuildParams(resolution=1), "build.resolution"),
        (common_pb2.BuildParams(resolution=4096), "build.resolution"),
        (common_pb2.BuildParams(width=9.0), "build.width"),
    ],
)
def test_a_bad_build_field_is_named(message: common_pb2.BuildParams, field: str) -> None:
    with pytest.raises(ValueError, match=rf"^{field}:"):
        build_from_proto(message, lambda: CIFAR_LIKE)


def _request(dataset: str, build: common_pb2.BuildParams) -> trainer_pb2.TrainRequest:
    return trainer_pb2.TrainRequest(
        architecture=common_pb2.Architecture(canonical=TINY),
        build=build,
        training=common_pb2.Training(dataset=dataset, steps=2, timeout_seconds=30.0),
    )


def test_a_job_says_exactly_what_is_built() -> None:
    """Fashion-MNIST (Debian's package) read for what the request leaves unset."""
    job = job_from_proto(
        _request("fashion-mnist", common_pb2.BuildParams()), Catalog.from_entries(())
    )
    assert job.build == BuildParams(num_classes=10, resolution=28, width=1.0)
    assert job.training.dataset == Catalog.from_entries(()).directory("fashion-mnist")
    assert (job.timeout_seconds, job.keep_weights) == (30.0, False)


def test_a_bad_request_is_invalid_input_and_a_bad_data_set_is_not(tmp_path: Path) -> None:
    """The request's fault is INVALID_ARGUMENT, never retried; a data set this trainer
    lacks or cannot read is a DatasetError, which its servicer answers with NOT_FOUND or
    INTERNAL, and the controller tries another trainer."""
    catalog = Catalog.from_entries((), roots=[tmp_path])
    with pytest.raises(InvalidInput, match=r"^build\.width:"):
        job_from_proto(_request("fashion-mnist", common_pb2.BuildParams(width=-2.0)), catalog)
    with pytest.raises(DatasetNotServed, match=r"training\.dataset"):
        job_from_proto(_request("/nowhere", common_pb2.BuildParams()), catalog)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "train-images-idx3-ubyte").write_bytes(b"\x00\x00")
    (broken / "train-labels-idx1-ubyte").write_bytes(b"\x00\x00")
    with pytest.raises(DatasetError) as info:
        job_from_proto(_request(str(broken), common_pb2.BuildParams()), catalog)
    assert not isinstance(info.value, InvalidInput)
