"""The base of the tests' scripted trainer servicers: answers ``ListDatasets`` as a real
trainer with Debian's Fashion-MNIST does, so a controller accepts specs that use it; and
:class:`ServedTraining`, a training function served as a trainer."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

import grpc
from prometheus_client import CollectorRegistry

from mnas.tls import ServerTLS
from mnas.v1 import common_pb2, trainer_pb2, trainer_pb2_grpc
from services.common.server import RunningServer, build_server
from services.trainer.server import CapacityExhausted, status_for
from tests.common.local_workers import Aborted, Failed, Relay, Slots, TrainFn, real_training

FASHION_MNIST = trainer_pb2.Dataset(
    name="fashion-mnist", format="idx", classes=10, resolution=28, examples=60000, channels=1
)


class FakeTrainer(trainer_pb2_grpc.TrainerServicer):
    datasets: tuple[trainer_pb2.Dataset, ...] = (FASHION_MNIST,)

    def Train(
        self, request: trainer_pb2.TrainRequest, context: grpc.ServicerContext
    ) -> Iterator[trainer_pb2.TrainResponse]:
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "a scripted trainer that trains nothing")

    def GetCapacity(
        self, request: common_pb2.GetCapacityRequest, context: grpc.ServicerContext
    ) -> common_pb2.GetCapacityResponse:
        return common_pb2.GetCapacityResponse(max_concurrent=1, hardware="scripted")

    def ListDatasets(
        self, request: trainer_pb2.ListDatasetsRequest, context: grpc.ServicerContext
    ) -> trainer_pb2.ListDatasetsResponse:
        return trainer_pb2.ListDatasetsResponse(datasets=self.datasets)


class ServedTraining(FakeTrainer):
    """``training`` (see :mod:`tests.common.local_workers`) served as the trainer serves
    its own: progress streamed, then the result, then the weights when asked for; a
    failure answered with the trainer's status table; ``capacity`` slots, a call over them
    refused with RESOURCE_EXHAUSTED; a cancelled call aborts the training."""

    def __init__(self, training: TrainFn = real_training, *, capacity: int = 1) -> None:
        self.training = training
        self.slots = Slots(capacity)

    def Train(
        self, request: trainer_pb2.TrainRequest, context: grpc.ServicerContext
    ) -> Iterator[trainer_pb2.TrainResponse]:
        try:
            self.slots.take()
        except CapacityExhausted as err:
            context.abort(*status_for(err))

        def work(
            report: Callable[[common_pb2.TrainProgress], None], aborted: threading.Event
        ) -> tuple[common_pb2.TrainResult, bytes | None]:
            try:
                return self.training(request, report, aborted)
            finally:
                self.slots.give_back()

        relay: Relay[common_pb2.TrainProgress, tuple[common_pb2.TrainResult, bytes | None]]
        relay = Relay(work)
        context.add_callback(relay.abort)
        try:
            events = relay.events()
            while True:
                try:
                    progress = next(events)
                except StopIteration as end:
                    result, weights = end.value
                    break
                yield trainer_pb2.TrainResponse(progress=progress)
        except Aborted:
            return
        except Failed as failed:
            if not isinstance(failed.error, Exception):
                raise failed.error from None
            context.abort(*status_for(failed.error))
        finally:
            relay.abort()
        yield trainer_pb2.TrainResponse(result=result)
        if request.training.return_weights and weights is not None:
            yield trainer_pb2.TrainResponse(
                weights=common_pb2.WeightsChunk(data=weights, offset=0, total_bytes=len(weights))
            )

    def GetCapacity(
        self, request: common_pb2.GetCapacityRequest, context: grpc.ServicerContext
    ) -> common_pb2.GetCapacityResponse:
        return common_pb2.GetCapacityResponse(max_concurrent=self.slots.capacity, hardware="served")


def serve(
    trainer: trainer_pb2_grpc.TrainerServicer, *, tls: ServerTLS | None = None
) -> RunningServer:
    """``trainer`` served as mnas.v1.Trainer on a loopback port (health included)."""
    return build_server(
        service_names=["mnas.v1.Trainer"],
        add_servicers=lambda s: trainer_pb2_grpc.add_TrainerServicer_to_server(trainer, s),
        registry=CollectorRegistry(),
        tls=tls,
    )
