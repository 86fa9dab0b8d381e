"""The base of the tests' scripted trainer servicers: answers ``ListDatasets`` as a real
trainer with Debian's Fashion-MNIST does, so a controller accepts specs that use it."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
from prometheus_client import CollectorRegistry

from mnas.tls import ServerTLS
from mnas.v1 import common_pb2, trainer_pb2, trainer_pb2_grpc
from services.common.server import RunningServer, build_server

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
