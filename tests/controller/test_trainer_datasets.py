"""The controller checks a spec's data set against what its trainers report over gRPC,
never against its own disk: a real trainer on loopback serves "fashion-mnist" from a small
directory of its own (600 images), and the controller's defaults follow that trainer's
answer, not the full Debian copy on this machine (60,000 images)."""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from mnas.client import Client, ControllerUnavailable
from mnas.results import SearchState
from mnas.specfile import parse_spec
from mnas.v1 import common_pb2, controller_pb2, controller_pb2_grpc, trainer_pb2
from services.common.server import RunningServer
from services.controller.clients import Backends, WorkerError
from services.controller.core import Controller
from services.controller.metrics import ControllerMetrics
from services.controller.server import make_server
from services.controller.store import Store
from services.latency.server import make_server as make_latency_server
from services.reward.server import make_server as make_reward_server
from services.trainer.server import TrainerConfig
from services.trainer.server import make_server as make_trainer_server

SPEC = """
objective: {kind: soft, target_latency_seconds: 0.01}
budget: {max_trials: 1}
training: {dataset: DATASET, steps: 1, batch_size: 8}
"""


def write_fashion_subset(directory: Path, n: int = 600) -> Path:
    """An IDX set shaped like Fashion-MNIST (28x28 grayscale, 10 classes), ``n`` images."""
    directory.mkdir(parents=True)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
    labels = (np.arange(n) % 10).astype(np.uint8)
    for stem, array in (("train-images-idx3-ubyte", images), ("train-labels-idx1-ubyte", labels)):
        header = bytes([0, 0, 0x08, array.ndim])
        header += b"".join(int(d).to_bytes(4, "big") for d in array.shape)
        (directory / f"{stem}.gz").write_bytes(gzip.compress(header + array.tobytes()))
    return directory


def controller(trainers: list[str], latency: str, reward: str, store: Store) -> RunningServer:
    backends = Backends(trainers=trainers, latency=[latency], reward=reward)
    core = Controller(store, backends, ControllerMetrics(CollectorRegistry()))
    return make_server(core, registry=CollectorRegistry())


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[tuple[RunningServer, RunningServer, RunningServer]]:
    subset = write_fashion_subset(tmp_path / "trainer-disk" / "fashion-mnist")
    trainer = make_trainer_server(
        TrainerConfig(isolate=False, datasets=(("fashion-mnist", subset),)), CollectorRegistry()
    )
    latency = make_latency_server(registry=CollectorRegistry())
    reward = make_reward_server(registry=CollectorRegistry())
    yield trainer, latency, reward
    for server in (trainer, latency, reward):
        server.stop(0)


def test_the_spec_takes_the_trainers_data_set_and_refuses_one_no_trainer_has(
    workers: tuple[RunningServer, RunningServer, RunningServer], tmp_path: Path
) -> None:
    trainer, latency, reward = workers
    store = Store.open(str(tmp_path / "mnas.db"))
    server = controller([trainer.address], latency.address, reward.address, store)
    try:
        with Client(server.address) as client:
            search = client.submit(parse_spec(SPEC.replace("DATASET", "fashion-mnist")))
            training = search.refresh().spec.training
            # 600 // 6 held out: the trainer's 600 images, not this machine's 60,000.
            assert training.validation_examples == 100
            final = search.wait(timeout=120)
            assert final.state is SearchState.SUCCEEDED, final.error
            assert final.trials_completed == 1

        stub = controller_pb2_grpc.ControllerStub(grpc.insecure_channel(server.address))
        request = controller_pb2.SubmitSearchRequest(
            spec=parse_spec(SPEC.replace("DATASET", "cifar100"))
        )
        with pytest.raises(grpc.RpcError) as info:
            stub.SubmitSearch(request, timeout=30)
        assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert str(info.value.details()).startswith(
            "spec.training.dataset: no trainer serves 'cifar100'; the trainers offer: "
            "fashion-mnist (10 classes, 28x28, 600 examples)"
        )
        assert len(store.list_searches()) == 1
    finally:
        server.stop(0)
        store.close()


def test_without_a_trainer_answering_submission_is_unavailable(
    workers: tuple[RunningServer, RunningServer, RunningServer], tmp_path: Path
) -> None:
    _, latency, reward = workers
    store = Store.open(str(tmp_path / "mnas.db"))
    server = controller(["127.0.0.1:1"], latency.address, reward.address, store)
    try:
        with Client(server.address) as client, pytest.raises(ControllerUnavailable) as info:
            client.submit(parse_spec(SPEC.replace("DATASET", "fashion-mnist")))
        assert "spec.training.dataset: no trainer answered" in str(info.value)
        assert store.list_searches() == []
    finally:
        server.stop(0)
        store.close()


def test_trials_landing_on_a_trainer_without_the_data_set_are_retried_on_one_with_it(
    workers: tuple[RunningServer, RunningServer, RunningServer], tmp_path: Path
) -> None:
    """A data set only some trainers serve (a volume not mounted on every pod): the spec
    is accepted, and a trial sent to a trainer that lacks it (NOT_FOUND) is retried on
    another instead of failing."""
    with_it, latency, reward = workers
    subset = write_fashion_subset(tmp_path / "other-disk" / "tiny-fashion")
    only_here = make_trainer_server(
        TrainerConfig(isolate=False, datasets=(("tiny-fashion", subset),)), CollectorRegistry()
    )
    without = with_it  # serves fashion-mnist, not tiny-fashion
    store = Store.open(str(tmp_path / "mnas.db"))
    server = controller(
        [without.address, only_here.address], latency.address, reward.address, store
    )
    try:
        backends = Backends(trainers=[without.address], latency=[], reward=reward.address)
        request = trainer_pb2.TrainRequest(
            architecture=common_pb2.Architecture(canonical="stem:8 r1_k3_s11_e1_i8_o8 head:16"),
            build=common_pb2.BuildParams(resolution=28, num_classes=10, width=1.0),
            training=common_pb2.Training(dataset="tiny-fashion", steps=1, batch_size=8),
        )
        with pytest.raises(WorkerError) as info:
            backends.train(
                without.address, request, on_progress=lambda p: None, register_cancel=lambda c: None
            )
        assert info.value.retryable and "unknown data set 'tiny-fashion'" in str(info.value)
        backends.close()

        # One job at a time, and no reference network: a second job holding the trainer
        # with the data set would leave only the other free for a retry.
        spec = SPEC.replace("DATASET", "tiny-fashion").replace(
            "budget: {max_trials: 1}", "budget: {max_trials: 3, max_attempts: 3}\nreference: none"
        )
        with Client(server.address) as client:
            final = client.submit(parse_spec(spec)).wait(timeout=180)
            trials = list(client.search(final.id).trials())
        assert final.state is SearchState.SUCCEEDED, final.error
        assert final.trials_completed == 3
        assert {t.trainer for t in trials} == {only_here.address}
    finally:
        server.stop(0)
        only_here.stop(0)
        store.close()
