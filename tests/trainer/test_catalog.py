"""The data sets a trainer serves: ``--dataset NAME=DIR``, the built-in Fashion-MNIST,
directories, and ``Trainer.ListDatasets`` over real gRPC on loopback."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from prometheus_client import CollectorRegistry

from mnas.v1 import common_pb2, trainer_pb2, trainer_pb2_grpc
from services.trainer.__main__ import main
from services.trainer.catalog import Catalog, DatasetNotServed, parse_dataset_flag
from services.trainer.datasets import FASHION_MNIST_DIR, DatasetError
from services.trainer.server import TrainerConfig, make_server
from tests.trainer.test_datasets import write_idx

NOT_THERE = Path("/nonexistent/mnas-data")


def test_flag_parses_name_and_directory() -> None:
    assert parse_dataset_flag("cifar10=/data/c10") == ("cifar10", Path("/data/c10"))
    for bad in ("cifar10", "=/data", "cifar10=", "Has Space=/d", "UPPER=/d", "-x=/d"):
        with pytest.raises(ValueError, match=r"^dataset: "):
            parse_dataset_flag(bad)


def test_bad_flag_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--port", "0", "--dataset", "no-directory"])
    assert info.value.code == 2
    assert "--dataset: expected NAME=DIR" in capsys.readouterr().err


def test_named_sets_beside_the_built_in_one(tmp_path: Path) -> None:
    tiny = write_idx(tmp_path / "tiny", n=24)
    catalog = Catalog.from_entries([("tiny", tiny), ("gone", NOT_THERE)], roots=[tmp_path])
    assert catalog.directory("tiny") == str(tiny)
    assert catalog.directory("fashion-mnist") == str(FASHION_MNIST_DIR)
    assert catalog.directory(str(tiny)) == str(tiny)  # a directory in a root names itself
    offered = {info.name: info for info in catalog.offered()}
    assert set(offered) == {"tiny", "fashion-mnist"}  # "gone" cannot be read: not offered
    assert (offered["tiny"].classes, offered["tiny"].examples) == (4, 24)
    assert (offered["fashion-mnist"].classes, offered["fashion-mnist"].examples) == (10, 60000)


def test_unknown_name_says_what_is_served(tmp_path: Path) -> None:
    catalog = Catalog.from_entries([("tiny", write_idx(tmp_path / "tiny"))], roots=[tmp_path])
    with pytest.raises(DatasetError) as info:
        catalog.directory(str(tmp_path / "cifar100"))
    assert str(info.value) == (
        f"training.dataset: unknown data set '{tmp_path / 'cifar100'}': neither a name this "
        "trainer serves (fashion-mnist, tiny) nor a directory it can read"
    )
    with pytest.raises(DatasetError) as info:
        Catalog.from_entries([]).directory(str(tmp_path))
    assert str(info.value) == (
        f"training.dataset: unknown data set '{tmp_path}': not a name this trainer serves "
        "(fashion-mnist); it reads no directory by path (no --data-root)"
    )
    with pytest.raises(ValueError, match="given twice"):
        Catalog.from_entries([("a", tmp_path), ("a", tmp_path)])


@pytest.fixture
def stub(tmp_path: Path) -> Iterator[trainer_pb2_grpc.TrainerStub]:
    config = TrainerConfig(
        isolate=False,
        datasets=(("tiny", write_idx(tmp_path / "tiny", 48)),),
        data_roots=(tmp_path,),
    )
    running = make_server(config, CollectorRegistry())
    with grpc.insecure_channel(running.address) as channel:
        yield trainer_pb2_grpc.TrainerStub(channel)
    running.stop(0)


def test_list_datasets_reports_named_sets_and_describes_a_requested_one(
    stub: trainer_pb2_grpc.TrainerStub, tmp_path: Path
) -> None:
    listed = stub.ListDatasets(trainer_pb2.ListDatasetsRequest(), timeout=30)
    by_name = {d.name: d for d in listed.datasets}
    assert set(by_name) == {"fashion-mnist", "tiny"}
    assert by_name["fashion-mnist"] == trainer_pb2.Dataset(
        name="fashion-mnist", format="idx", classes=10, resolution=28, examples=60000, channels=1
    )
    assert (by_name["tiny"].classes, by_name["tiny"].resolution, by_name["tiny"].examples) == (
        4,
        6,  # the larger side of the 6x5 images
        48,
    )
    other = write_idx(tmp_path / "other", 30)
    asked = stub.ListDatasets(trainer_pb2.ListDatasetsRequest(name=str(other)), timeout=30)
    assert [d.name for d in asked.datasets][-1] == str(other)
    assert not asked.problem
    missing = stub.ListDatasets(trainer_pb2.ListDatasetsRequest(name="cifar100"), timeout=30)
    assert {d.name for d in missing.datasets} == {"fashion-mnist", "tiny"}
    assert missing.problem.startswith("training.dataset: unknown data set 'cifar100'")


def test_train_reads_a_named_set_from_its_directory(stub: trainer_pb2_grpc.TrainerStub) -> None:
    request = trainer_pb2.TrainRequest(
        architecture=common_pb2.Architecture(
            canonical="stem:8 r1_k3_s11_e1_i8_o8 head:16 act:relu dropout:0"
        ),
        build=common_pb2.BuildParams(resolution=8, num_classes=4, width=1.0),
        training=common_pb2.Training(
            dataset="tiny", steps=2, batch_size=8, validation_examples=8, seed=1
        ),
    )
    events = list(stub.Train(request, timeout=60))
    assert events[-1].HasField("result")
    assert events[-1].result.samples_seen == 16


@pytest.mark.parametrize(
    "escape",
    [
        "{root}/../outside",  # up and out
        "{root}/link-out",  # a symbolic link pointing out of the root
        "outside",  # relative: to what?
        "/etc",
    ],
)
def test_a_path_cannot_leave_the_data_roots(tmp_path: Path, escape: str) -> None:
    root = tmp_path / "root"
    write_idx(root / "inside", n=12)
    outside = write_idx(tmp_path / "outside", n=12)
    (root / "link-out").symlink_to(outside)
    catalog = Catalog.from_entries([], roots=[root])
    assert catalog.directory(str(root / "inside")) == str(root / "inside")
    name = escape.format(root=root)
    with pytest.raises(DatasetNotServed) as info:
        catalog.directory(name)
    assert f"nor an absolute path inside its data roots ({root})" in str(info.value)
    with pytest.raises(DatasetNotServed):
        catalog.describe(name)
