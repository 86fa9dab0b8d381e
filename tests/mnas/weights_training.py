"""A scripted trainer for the SDK's tests: answers at once with an accuracy fixed by the
architecture, and, when the controller asks for weights, sends a real ``state_dict`` of
the trainer's own PyTorch module (built with the request's parameters, seeded by the
architecture's id), remembering what it sent."""

from __future__ import annotations

import io
import threading
from collections.abc import Iterator

import grpc
import torch

from mnas.arch import decode
from mnas.v1 import common_pb2, trainer_pb2
from services.trainer.builder import build_torch
from tests.common.fake_trainer import FakeTrainer

CHUNK = 64 * 1024  # several chunks for all but the smallest networks


def accuracy_of(arch_id: str) -> float:
    return 0.5 + int(arch_id[:4], 16) % 40 / 100


class WeightsTrainer(FakeTrainer):
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.sent: dict[str, bytes] = {}  # canonical form -> the state_dict's bytes

    def Train(
        self, request: trainer_pb2.TrainRequest, context: grpc.ServicerContext
    ) -> Iterator[trainer_pb2.TrainResponse]:
        arch = decode(request.architecture.canonical)
        yield trainer_pb2.TrainResponse(
            result=common_pb2.TrainResult(accuracy=accuracy_of(arch.id), samples_seen=1)
        )
        if not request.training.return_weights:
            return
        build = request.build
        with self.lock:  # one global RNG
            torch.manual_seed(int(arch.id[:8], 16))
            model = build_torch(
                arch,
                num_classes=build.num_classes or 10,
                resolution=build.resolution or 28,
                width=build.width or 1.0,
            )
        buffer = io.BytesIO()
        torch.save(model.state_dict(), buffer)
        data = buffer.getvalue()
        with self.lock:
            self.sent[arch.canonical] = data
        for offset in range(0, len(data), CHUNK):
            yield trainer_pb2.TrainResponse(
                weights=common_pb2.WeightsChunk(
                    data=data[offset : offset + CHUNK], offset=offset, total_bytes=len(data)
                )
            )
