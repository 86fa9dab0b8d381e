"""The controller's calls to workers, against real gRPC servers on loopback.

A training is a server stream that the controller reads on the trial's thread, while
other threads (a cancelled search, a controller shutting down) may abort it; and most
trainings are left as soon as their result arrives. Both must work and free the call.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator

import grpc
import pytest
from prometheus_client import CollectorRegistry

from mnas.v1 import common_pb2, trainer_pb2, trainer_pb2_grpc
from services.common.server import RunningServer, build_server
from services.controller.clients import Backends, WorkerError
from tests.common.fake_trainer import FakeTrainer

WAIT_SECONDS = 30.0  # a bound for a hung test, never reached when things work


class InstantTrainer(FakeTrainer):
    def Train(
        self, request: trainer_pb2.TrainRequest, context: grpc.ServicerContext
    ) -> Iterator[trainer_pb2.TrainResponse]:
        yield trainer_pb2.TrainResponse(result=common_pb2.TrainResult(accuracy=0.5, samples_seen=1))

    def GetCapacity(
        self, request: common_pb2.GetCapacityRequest, context: grpc.ServicerContext
    ) -> common_pb2.GetCapacityResponse:
        return common_pb2.GetCapacityResponse(max_concurrent=1, hardware="instant")


class HoldingTrainer(FakeTrainer):
    """Sends one progress report, then holds the call until the client cancels it."""

    def __init__(self) -> None:
        self.cancelled = threading.Event()

    def Train(
        self, request: trainer_pb2.TrainRequest, context: grpc.ServicerContext
    ) -> Iterator[trainer_pb2.TrainResponse]:
        context.add_callback(self.cancelled.set)
        yield trainer_pb2.TrainResponse(
            progress=common_pb2.TrainProgress(step=1, total_steps=10, accuracy=0.25)
        )
        self.cancelled.wait(WAIT_SECONDS)

    def GetCapacity(
        self, request: common_pb2.GetCapacityRequest, context: grpc.ServicerContext
    ) -> common_pb2.GetCapacityResponse:
        return common_pb2.GetCapacityResponse(max_concurrent=1, hardware="holding")


class ChunkingTrainer(FakeTrainer):
    """Answers at once, then sends ``weights`` in chunks of ``size`` bytes at ``offsets``
    (each chunk's true offset when None)."""

    def __init__(self, weights: bytes, size: int, offsets: list[int] | None = None) -> None:
        self.weights, self.size, self.offsets = weights, size, offsets

    def Train(
        self, request: trainer_pb2.TrainRequest, context: grpc.ServicerContext
    ) -> Iterator[trainer_pb2.TrainResponse]:
        yield trainer_pb2.TrainResponse(result=common_pb2.TrainResult(accuracy=0.5, samples_seen=1))
        starts = range(0, len(self.weights), self.size)
        for start, offset in zip(starts, self.offsets or starts, strict=True):
            yield trainer_pb2.TrainResponse(
                weights=common_pb2.WeightsChunk(
                    data=self.weights[start : start + self.size],
                    offset=offset,
                    total_bytes=len(self.weights),
                )
            )


def _train_with_weights(servicer: FakeTrainer) -> tuple[common_pb2.TrainResult, bytes | None]:
    server = build_server(
        service_names=["mnas.v1.Trainer"],
        add_servicers=lambda s: trainer_pb2_grpc.add_TrainerServicer_to_server(servicer, s),
        registry=CollectorRegistry(),
    )
    backends = Backends(trainers=[server.address], latency=[], reward=server.address)
    request = trainer_pb2.TrainRequest(training=common_pb2.Training(return_weights=True))
    try:
        return backends.train(
            server.address,
            request,
            on_progress=lambda progress: None,
            register_cancel=lambda abort: None,
        )
    finally:
        backends.close()
        server.stop(0)


def test_weights_sent_in_chunks_are_joined_in_order() -> None:
    weights = bytes(range(256)) * 40  # 10240 bytes: three chunks of 4096, the last short
    result, received = _train_with_weights(ChunkingTrainer(weights, 4096))
    assert result.accuracy == 0.5
    assert received == weights


def test_a_weights_chunk_out_of_order_is_a_worker_error() -> None:
    weights = bytes(range(256)) * 32
    with pytest.raises(WorkerError, match="weights chunk at offset 0 out of order") as caught:
        _train_with_weights(ChunkingTrainer(weights, 4096, offsets=[0, 0]))
    assert caught.value.retryable


def _resident_mib() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def test_trainings_left_at_their_result_free_their_calls() -> None:
    # gRPC Python's single-threaded streams keep the native call of a stream not read to
    # its end, about 21 KB each (measured): 2000 trainings would keep about 42 MiB.
    servicer = InstantTrainer()
    server = build_server(
        service_names=["mnas.v1.Trainer"],
        add_servicers=lambda s: trainer_pb2_grpc.add_TrainerServicer_to_server(servicer, s),
        registry=CollectorRegistry(),
    )
    backends = Backends(trainers=[server.address], latency=[], reward=server.address)

    def train(times: int) -> None:
        for _ in range(times):
            result, _ = backends.train(
                server.address,
                trainer_pb2.TrainRequest(),
                on_progress=lambda progress: None,
                register_cancel=lambda abort: None,
            )
            assert result.accuracy == 0.5

    try:
        train(200)  # first-use allocations
        before = _resident_mib()
        train(2000)
        assert _resident_mib() - before < 10
    finally:
        backends.close()
        server.stop(0)


@pytest.fixture
def trainer() -> Iterator[tuple[HoldingTrainer, RunningServer]]:
    servicer = HoldingTrainer()
    server = build_server(
        service_names=["mnas.v1.Trainer"],
        add_servicers=lambda s: trainer_pb2_grpc.add_TrainerServicer_to_server(servicer, s),
        registry=CollectorRegistry(),
    )
    try:
        yield servicer, server
    finally:
        server.stop(0)


def test_another_thread_aborts_a_streaming_training(
    trainer: tuple[HoldingTrainer, RunningServer],
) -> None:
    servicer, server = trainer
    backends = Backends(trainers=[server.address], latency=[], reward=server.address)
    aborts: list[Callable[[], None]] = []
    progress: list[common_pb2.TrainProgress] = []
    received = threading.Event()
    outcome: list[BaseException] = []

    def report(update: common_pb2.TrainProgress) -> None:
        progress.append(update)
        received.set()

    def train() -> None:
        try:
            backends.train(
                server.address,
                trainer_pb2.TrainRequest(),
                on_progress=report,
                register_cancel=aborts.append,
            )
        except BaseException as err:  # handed to the test's thread
            outcome.append(err)

    caller = threading.Thread(target=train)
    caller.start()
    try:
        assert received.wait(WAIT_SECONDS)  # streaming: the report reached the caller
        (abort,) = aborts
        abort()
        caller.join(WAIT_SECONDS)
        assert not caller.is_alive()
        (error,) = outcome
        assert isinstance(error, WorkerError)
        assert "CANCELLED" in str(error)
        assert servicer.cancelled.wait(WAIT_SECONDS)  # the trainer saw it too
        assert [p.step for p in progress] == [1]
    finally:
        servicer.cancelled.set()
        caller.join(WAIT_SECONDS)
        backends.close()
