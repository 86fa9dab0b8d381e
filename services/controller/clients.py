"""The controller's calls to trainers, latency services and the reward service, over gRPC.

:class:`Backends` implements :class:`~services.controller.backends.Workers`. Every call
has a deadline; channels retry UNAVAILABLE with back-off (``mnas.rpc``). A failed call
becomes :class:`~services.controller.backends.WorkerError`, which says whether another
endpoint may succeed where this one failed.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc

from mnas.rpc import channel
from mnas.tls import ClientTLS
from mnas.v1 import (
    common_pb2,
    latency_pb2,
    latency_pb2_grpc,
    reward_pb2,
    reward_pb2_grpc,
    trainer_pb2,
    trainer_pb2_grpc,
)
from services.controller.backends import DatasetOffers, WorkerError
from services.controller.spec import Dataset
from services.controller.workers import WorkerPool

__all__ = ["Backends", "DatasetOffers", "Deadlines", "WorkerError"]

_Stub = TypeVar("_Stub")

# Codes for which the trial itself is at fault: retrying elsewhere cannot help. A trainer
# answers ABORTED when a training failed by itself (out of memory, a crash, its time limit).
_PERMANENT = {
    grpc.StatusCode.ABORTED,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.OUT_OF_RANGE,
    grpc.StatusCode.UNIMPLEMENTED,
}


def _error(kind: str, address: str, err: grpc.RpcError, *, answered: bool = True) -> WorkerError:
    """``answered``: the call had sent something back before it failed (a refusal for want
    of a slot comes first)."""
    code = err.code()
    details = err.details()
    permanent = code in _PERMANENT
    return WorkerError(
        f"{kind} {address}: {code.name}: {details}",
        retryable=not permanent,
        # Capacity refusals and our own cancellations say nothing about the endpoint.
        endpoint_failed=not permanent and code not in (grpc.StatusCode.RESOURCE_EXHAUSTED,),
        busy=code == grpc.StatusCode.RESOURCE_EXHAUSTED and not answered,
    )


@dataclass(frozen=True)
class Deadlines:
    train_seconds: float = 3600.0
    measure_seconds: float = 900.0
    score_seconds: float = 10.0
    probe_seconds: float = 5.0


class Backends:
    """The workers over gRPC: channels to every worker endpoint, the pools that schedule
    them, and the reward; ``tls``: call them all over TLS (plaintext when None)."""

    def __init__(
        self,
        *,
        trainers: Sequence[str],
        latency: Sequence[str],
        reward: str,
        deadlines: Deadlines | None = None,
        tls: ClientTLS | None = None,
    ) -> None:
        self.deadlines = deadlines or Deadlines()
        self._tls = tls
        self._channels: dict[str, grpc.Channel] = {}
        self._stubs: dict[tuple[str, Callable[[grpc.Channel], Any]], Any] = {}
        self._lock = threading.Lock()
        self.trainers = WorkerPool("trainer", trainers, self._trainer_capacity)
        self.latency = WorkerPool("latency", latency, self._latency_capacity)
        self.reward_address = reward

    def _stub(self, address: str, kind: Callable[[grpc.Channel], _Stub]) -> _Stub:
        """The stub of service ``kind`` at ``address``, made once: making one builds a
        callable for every method, about 0.04 ms of the interpreter per call otherwise."""
        key = (address, kind)
        with self._lock:
            stub = self._stubs.get(key)
            if stub is None:
                if address not in self._channels:
                    self._channels[address] = channel(address, tls=self._tls, max_attempts=3)
                stub = self._stubs[key] = kind(self._channels[address])
            return stub

    def _trainer_capacity(self, address: str) -> int:
        stub = self._stub(address, trainer_pb2_grpc.TrainerStub)
        response = stub.GetCapacity(
            common_pb2.GetCapacityRequest(), timeout=self.deadlines.probe_seconds
        )
        return int(response.max_concurrent)

    def _latency_capacity(self, address: str) -> int:
        stub = self._stub(address, latency_pb2_grpc.LatencyStub)
        response = stub.GetCapacity(
            common_pb2.GetCapacityRequest(), timeout=self.deadlines.probe_seconds
        )
        return int(response.max_concurrent)

    def device_classes(self) -> set[str]:
        """Device classes offered by the latency endpoints that answer now."""
        self.latency.refresh(force=True)
        classes: set[str] = set()
        for endpoint in self.latency.snapshot():
            if not endpoint.healthy:
                continue
            stub = self._stub(endpoint.address, latency_pb2_grpc.LatencyStub)
            try:
                response = stub.ListDevices(
                    latency_pb2.ListDevicesRequest(), timeout=self.deadlines.probe_seconds
                )
            except grpc.RpcError:
                continue
            classes.update(d.device_class for d in response.devices)
        return classes

    def datasets(self, name: str = "") -> DatasetOffers:
        """The data sets offered by the trainer endpoints that answer now, each asked to
        describe ``name`` too; all are asked at once."""
        self.trainers.refresh(force=True)
        request = trainer_pb2.ListDatasetsRequest(name=name)
        calls = {
            endpoint.address: self._stub(
                endpoint.address, trainer_pb2_grpc.TrainerStub
            ).ListDatasets.future(request, timeout=self.deadlines.probe_seconds)
            for endpoint in self.trainers.snapshot()
            if endpoint.healthy
        }
        offers: dict[str, dict[str, Dataset]] = {}
        problems: dict[str, str] = {}
        for address, call in calls.items():
            try:
                response = call.result()
            except grpc.RpcError as err:
                problems[address] = f"{err.code().name}: {err.details()}"
                continue
            offers[address] = {
                d.name: Dataset(
                    name=d.name, classes=d.classes, resolution=d.resolution, examples=d.examples
                )
                for d in response.datasets
            }
            if response.problem:
                problems[address] = response.problem
        return DatasetOffers(offers, problems)

    def measure(
        self,
        address: str,
        request: latency_pb2.MeasureRequest,
        *,
        register_cancel: Callable[[Callable[[], None]], None] | None = None,
    ) -> latency_pb2.MeasureResponse:
        """One measurement; ``register_cancel`` receives a function that aborts it (a
        phone's measurement may take minutes: a cancelled search must not wait for it)."""
        stub = self._stub(address, latency_pb2_grpc.LatencyStub)
        call = stub.Measure.future(request, timeout=self.deadlines.measure_seconds)
        if register_cancel is not None:
            register_cancel(call.cancel)
        try:
            response: latency_pb2.MeasureResponse = call.result()
        except grpc.FutureCancelledError:
            raise WorkerError(
                f"latency {address}: measurement cancelled", retryable=False, endpoint_failed=False
            ) from None
        except grpc.RpcError as err:
            raise _error("latency", address, err) from None
        return response

    def train(
        self,
        address: str,
        request: trainer_pb2.TrainRequest,
        *,
        on_progress: Callable[[common_pb2.TrainProgress], None],
        register_cancel: Callable[[Callable[[], None]], None],
    ) -> tuple[common_pb2.TrainResult, bytes | None]:
        """Stream one training; ``register_cancel`` receives a function that aborts it.

        Returns the result and, when the request asked for them, the trained weights.
        """
        stub = self._stub(address, trainer_pb2_grpc.TrainerStub)
        call = stub.Train(request, timeout=self.deadlines.train_seconds)
        register_cancel(call.cancel)
        result: common_pb2.TrainResult | None = None
        chunks: list[bytes] = []
        received = 0
        answered = False
        try:
            for event in call:
                answered = True
                if event.HasField("result"):
                    result = event.result
                    if not request.training.return_weights:
                        return result, None
                elif event.HasField("weights"):
                    if event.weights.offset != received:
                        raise WorkerError(
                            f"trainer {address}: weights chunk at offset {event.weights.offset} "
                            "out of order",
                            retryable=True,
                            endpoint_failed=True,
                        )
                    chunks.append(event.weights.data)
                    received += len(event.weights.data)
                else:
                    on_progress(event.progress)
        except grpc.RpcError as err:
            raise _error("trainer", address, err, answered=answered) from None
        if result is not None:
            return result, b"".join(chunks) if chunks else None
        raise WorkerError(
            f"trainer {address}: stream ended without a result",
            retryable=True,
            endpoint_failed=True,
        )

    def score(self, request: reward_pb2.ScoreRequest) -> float:
        stub = self._stub(self.reward_address, reward_pb2_grpc.RewardStub)
        try:
            response = stub.Score(request, timeout=self.deadlines.score_seconds)
        except grpc.RpcError as err:
            raise _error("reward", self.reward_address, err) from None
        return float(response.reward)

    def close(self) -> None:
        self.trainers.close()
        self.latency.close()
        with self._lock:
            for ch in self._channels.values():
                ch.close()
            self._channels.clear()
            self._stubs.clear()
