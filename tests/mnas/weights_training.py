"""A scripted training for the SDK's tests: answers at once with an accuracy fixed by the
architecture and, when the controller asks for weights, returns a real ``state_dict`` of
the trainer's own PyTorch module (built with the request's parameters, seeded by the
architecture's id), remembering what it returned."""

from __future__ import annotations

import io
import threading
from collections.abc import Callable

import torch

from mnas.arch import decode
from mnas.v1 import common_pb2, trainer_pb2
from services.trainer.builder import build_torch


def accuracy_of(arch_id: str) -> float:
    return 0.5 + int(arch_id[:4], 16) % 40 / 100


class WeightsTraining:
    """A training function (see :mod:`tests.common.local_workers`)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.sent: dict[str, bytes] = {}  # canonical form -> the state_dict's bytes

    def __call__(
        self,
        request: trainer_pb2.TrainRequest,
        report: Callable[[common_pb2.TrainProgress], None],
        aborted: threading.Event,
    ) -> tuple[common_pb2.TrainResult, bytes | None]:
        arch = decode(request.architecture.canonical)
        result = common_pb2.TrainResult(accuracy=accuracy_of(arch.id), samples_seen=1)
        if not request.training.return_weights:
            return result, None
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
        return result, data
