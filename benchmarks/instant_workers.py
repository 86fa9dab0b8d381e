"""Workers that answer at once, for benchmarks of the controller alone: a trainer and a
latency service whose every answer is immediate (a harness; the product never does
this), and the real reward service, served in a process of their own as they would be on
other machines.

    with instant_workers_process() as (addresses, pid):
        ...  # addresses["trainer"], ["latency"], ["reward"]
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
from prometheus_client import CollectorRegistry

from mnas.v1 import (
    common_pb2,
    latency_pb2,
    latency_pb2_grpc,
    trainer_pb2,
    trainer_pb2_grpc,
)
from services.common.server import RunningServer, build_server
from services.reward.server import make_server as make_reward_server

__all__ = ["CAPACITY", "InstantLatency", "InstantTrainer", "instant_workers_process"]

CAPACITY = 64  # trainings and measurements each endpoint takes at once


class InstantTrainer(trainer_pb2_grpc.TrainerServicer):
    """Answers every Train at once (a benchmark harness; the product never does)."""

    def Train(
        self, request: trainer_pb2.TrainRequest, context: grpc.ServicerContext
    ) -> Iterator[trainer_pb2.TrainResponse]:
        accuracy = 0.5 + (hash(request.architecture.canonical) % 1000) / 4000
        yield trainer_pb2.TrainResponse(
            result=common_pb2.TrainResult(accuracy=accuracy, loss=1.0, seconds=0.0, samples_seen=1)
        )

    def GetCapacity(
        self, request: common_pb2.GetCapacityRequest, context: grpc.ServicerContext
    ) -> common_pb2.GetCapacityResponse:
        return common_pb2.GetCapacityResponse(max_concurrent=CAPACITY, hardware="instant")

    def ListDatasets(
        self, request: trainer_pb2.ListDatasetsRequest, context: grpc.ServicerContext
    ) -> trainer_pb2.ListDatasetsResponse:
        fashion = trainer_pb2.Dataset(
            name="fashion-mnist", classes=10, resolution=28, examples=60000
        )
        return trainer_pb2.ListDatasetsResponse(datasets=[fashion])


class InstantLatency(latency_pb2_grpc.LatencyServicer):
    def Measure(
        self, request: latency_pb2.MeasureRequest, context: grpc.ServicerContext
    ) -> latency_pb2.MeasureResponse:
        seconds = 0.001 + (hash(request.architecture.canonical) % 1000) / 1e6
        stats = common_pb2.LatencyStats(
            median_seconds=seconds,
            min_seconds=seconds,
            p90_seconds=seconds,
            mean_seconds=seconds,
            samples_seconds=[seconds],
            device_class="host-cpu",
            device="instant",
        )
        return latency_pb2.MeasureResponse(stats=stats)

    def ListDevices(
        self, request: latency_pb2.ListDevicesRequest, context: grpc.ServicerContext
    ) -> latency_pb2.ListDevicesResponse:
        return latency_pb2.ListDevicesResponse(
            devices=[latency_pb2.Device(id="instant", device_class="host-cpu", state="ready")]
        )

    def GetCapacity(
        self, request: common_pb2.GetCapacityRequest, context: grpc.ServicerContext
    ) -> common_pb2.GetCapacityResponse:
        return common_pb2.GetCapacityResponse(max_concurrent=CAPACITY, hardware="instant")


def _serve(name: str, add: object) -> RunningServer:
    return build_server(
        service_names=[name],
        add_servicers=add,  # type: ignore[arg-type]
        registry=CollectorRegistry(),
        max_workers=CAPACITY + 8,
    )


def serve() -> None:
    """Serve the instant trainer and latency service and the real reward service until
    stdin closes; print their addresses as one JSON line first."""
    trainer = _serve(
        "mnas.v1.Trainer",
        lambda s: trainer_pb2_grpc.add_TrainerServicer_to_server(InstantTrainer(), s),
    )
    latency = _serve(
        "mnas.v1.Latency",
        lambda s: latency_pb2_grpc.add_LatencyServicer_to_server(InstantLatency(), s),
    )
    reward = make_reward_server(registry=CollectorRegistry())
    print(
        json.dumps(
            {"trainer": trainer.address, "latency": latency.address, "reward": reward.address}
        ),
        flush=True,
    )
    sys.stdin.read()
    for server in (trainer, latency, reward):
        server.stop(0)


@contextlib.contextmanager
def instant_workers_process() -> Iterator[tuple[dict[str, str], int]]:
    """The instant trainer, instant latency service and the reward service in a process
    of their own, until the block ends; their addresses and the process id."""
    child = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.instant_workers"],
        cwd=Path(__file__).resolve().parents[1],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None and child.stdin is not None
    try:
        yield json.loads(child.stdout.readline()), child.pid
    finally:
        child.stdin.close()
        child.wait(timeout=30)


if __name__ == "__main__":
    serve()
