"""What the controller needs of its workers, as an interface free of gRPC.

A search measures an architecture's latency, trains it (streaming progress, abortable
from another thread) and scores it; the controller also asks which data sets and device
classes the workers offer when it checks a spec. :class:`~services.controller.clients.
Backends` does all of it over gRPC; a test or a benchmark may do it in process. Every
failure of a worker call is a :class:`WorkerError`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from mnas.v1 import common_pb2, latency_pb2, reward_pb2, trainer_pb2
from services.controller.spec import Dataset
from services.controller.workers import WorkerPool

__all__ = ["DatasetOffers", "RegisterCancel", "TrialWorkers", "WorkerError", "Workers"]

# A function that receives the function that aborts a call in flight.
RegisterCancel = Callable[[Callable[[], None]], None]


class WorkerError(Exception):
    """A worker call failed; ``retryable`` when another attempt may succeed;
    ``endpoint_failed`` when the endpoint is to blame (it is benched); ``busy`` when the
    worker refused the job for want of a free slot (no attempt was made)."""

    def __init__(
        self, message: str, *, retryable: bool, endpoint_failed: bool, busy: bool = False
    ) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.endpoint_failed = endpoint_failed
        self.busy = busy


@dataclass(frozen=True)
class DatasetOffers:
    """What the trainers that answered say about data sets: each endpoint's offers by
    name, and why an endpoint could not serve the name asked about."""

    by_endpoint: dict[str, dict[str, Dataset]]
    problems: dict[str, str]


class TrialWorkers(Protocol):
    """What a running search needs: pools that hand out slots on trainer and latency
    endpoints, and the three calls a trial makes on the endpoint whose slot it holds."""

    @property
    def trainers(self) -> WorkerPool: ...

    @property
    def latency(self) -> WorkerPool: ...

    def measure(
        self,
        address: str,
        request: latency_pb2.MeasureRequest,
        *,
        register_cancel: RegisterCancel | None = None,
    ) -> latency_pb2.MeasureResponse:
        """One measurement; ``register_cancel`` receives a function that aborts it."""
        ...

    def train(
        self,
        address: str,
        request: trainer_pb2.TrainRequest,
        *,
        on_progress: Callable[[common_pb2.TrainProgress], None],
        register_cancel: RegisterCancel,
    ) -> tuple[common_pb2.TrainResult, bytes | None]:
        """One training: ``on_progress`` gets each report on the caller's thread (what it
        raises propagates, and the caller aborts the training); ``register_cancel``
        receives the function that aborts it. The result and, when the request asked for
        them, the weights."""
        ...

    def score(self, request: reward_pb2.ScoreRequest) -> float:
        """The reward of one trial."""
        ...


class Workers(TrialWorkers, Protocol):
    """Everything the controller needs of its workers: a search's calls, and what the
    workers offer, asked when a spec is checked."""

    def device_classes(self) -> set[str]:
        """Device classes offered by the latency endpoints that answer now."""
        ...

    def datasets(self, name: str = "") -> DatasetOffers:
        """The data sets the trainer endpoints offer, each asked to describe ``name``."""
        ...

    def close(self) -> None: ...
