"""The controller's calls to workers, against real gRPC servers on loopback.

A training streams on the thread that asked for it (no thread per call), so what matters
is that the other ways into it still work: its progress reaches the caller, and another
thread (a cancelled search, a controller shutting down) can abort it while it streams.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

import grpc
import pytest
from prometheus_client import CollectorRegistry

from mnas.v1 import common_pb2, trainer_pb2, trainer_pb2_grpc
from services.common.server import RunningServer, build_server
from services.controller.clients import Backends, WorkerError

WAIT_SECONDS = 30.0  # a bound for a hung test, never reached when things work


class HoldingTrainer(trainer_pb2_grpc.TrainerServicer):
    """Sends one progress report, then holds the call until the client cancels it."""

    def __init__(self) -> None:
        self.reported = threading.Event()
        self.cancelled = threading.Event()

    def Train(
        self, request: trainer_pb2.TrainRequest, context: grpc.ServicerContext
    ) -> Iterator[trainer_pb2.TrainResponse]:
        context.add_callback(self.cancelled.set)
        yield trainer_pb2.TrainResponse(
            progress=common_pb2.TrainProgress(step=1, total_steps=10, accuracy=0.25)
        )
        self.reported.set()
        self.cancelled.wait(WAIT_SECONDS)

    def GetCapacity(
        self, request: common_pb2.GetCapacityRequest, context: grpc.ServicerContext
    ) -> common_pb2.GetCapacityResponse:
        return common_pb2.GetCapacityResponse(max_concurrent=1, hardware="holding")


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
    outcome: list[BaseException] = []

    def train() -> None:
        try:
            backends.train(
                server.address,
                trainer_pb2.TrainRequest(),
                on_progress=progress.append,
                register_cancel=aborts.append,
            )
        except BaseException as err:  # handed to the test's thread
            outcome.append(err)

    caller = threading.Thread(target=train)
    caller.start()
    try:
        assert servicer.reported.wait(WAIT_SECONDS)
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
