"""The controller's workers in process: :class:`InProcessWorkers` implements
:class:`~services.controller.backends.Workers` without gRPC, measuring through the latency
service's core, training through a training function and scoring through
:mod:`services.reward.rewards`.

It lives with the tests because it imports the trainer's and the latency service's
cores, which the controller's container does not install. Training functions take the
request, a function to report progress with and an event set when the call is aborted;
:func:`real_training` is the trainer's own, tests pass scripted ones. A call runs on a
thread of its own, as on a remote worker: an abort returns the caller at once, and a
trainer's slot stays taken until its training has really ended.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Generic, TypeVar

from mnas.errors import InvalidInput
from mnas.v1 import common_pb2, latency_pb2, reward_pb2, trainer_pb2
from services.controller.backends import DatasetOffers, RegisterCancel, WorkerError
from services.controller.spec import Dataset
from services.controller.workers import WorkerPool
from services.latency.conversions import build_from_proto, settings_from_proto, stats_to_proto
from services.latency.oracle import HostOracle
from services.latency.service import LatencyService, NotCalibrated
from services.reward.conversions import objective_from_proto
from services.reward.rewards import reward
from services.trainer.catalog import Catalog
from services.trainer.conversions import job_from_proto, outcome_to_proto, progress_to_proto
from services.trainer.isolation import TrialFailed
from services.trainer.slots import CapacityExhausted
from services.trainer.training import train

__all__ = [
    "FASHION_MNIST",
    "Aborted",
    "Failed",
    "InProcessWorkers",
    "Relay",
    "Slots",
    "TrainFn",
    "instant_training",
    "real_training",
]

Report = TypeVar("Report")
Result = TypeVar("Result")

# (request, report progress, aborted) -> (result, weights or None)
TrainFn = Callable[
    [trainer_pb2.TrainRequest, Callable[[common_pb2.TrainProgress], None], threading.Event],
    tuple[common_pb2.TrainResult, bytes | None],
]

FASHION_MNIST = Dataset(name="fashion-mnist", classes=10, resolution=28, examples=60000)

# Errors for which the trial itself is at fault (as the services' status tables say).
_PERMANENT: tuple[type[Exception], ...] = (InvalidInput, TrialFailed, NotCalibrated)


class Aborted(Exception):
    """The call was aborted before its work ended."""


class Failed(Exception):
    """The work raised ``error``."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error))
        self.error = error


@dataclass(frozen=True)
class _Ended(Generic[Result]):
    result: Result | None = None
    error: BaseException | None = None


class Relay(Generic[Report, Result]):
    """``work(report, aborted)`` on a thread of its own: :meth:`events` yields what it
    reports, on the caller's thread, then returns its result (:class:`Failed` when it
    raised); :meth:`abort` sets ``aborted`` and ends :meth:`events` with :class:`Aborted`
    at once."""

    def __init__(self, work: Callable[[Callable[[Report], None], threading.Event], Result]) -> None:
        self.aborted = threading.Event()
        self._events: queue.Queue[Report | _Ended[Result] | None] = queue.Queue()
        threading.Thread(target=self._run, args=(work,), daemon=True).start()

    def _run(self, work: Callable[[Callable[[Report], None], threading.Event], Result]) -> None:
        try:
            self._events.put(_Ended(result=work(self._events.put, self.aborted)))
        except BaseException as err:  # handed to the caller's thread
            self._events.put(_Ended(error=err))

    def abort(self) -> None:
        self.aborted.set()
        self._events.put(None)

    def events(self) -> Generator[Report, None, Result]:
        while True:
            event = self._events.get()
            if event is None or self.aborted.is_set():
                raise Aborted
            if not isinstance(event, _Ended):
                yield event
                continue
            if event.error is not None:
                raise Failed(event.error)
            return event.result  # type: ignore[return-value]  # set when error is None

    def wait(self, on_report: Callable[[Report], None]) -> Result:
        """The result, ``on_report`` called with each report first; what it raises
        propagates (the work goes on until aborted)."""
        events = self.events()
        while True:
            try:
                report = next(events)
            except StopIteration as end:
                return end.value  # type: ignore[no-any-return]
            on_report(report)


class Slots:
    """A trainer's slots; taking one beyond its capacity raises CapacityExhausted."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._lock = threading.Lock()
        self._in_use = 0

    def take(self) -> None:
        with self._lock:
            if self._in_use >= self.capacity:
                raise CapacityExhausted(f"trainer busy: all {self.capacity} training slots in use")
            self._in_use += 1

    def give_back(self) -> None:
        with self._lock:
            self._in_use -= 1


_CATALOG = Catalog.from_entries(())


def real_training(
    request: trainer_pb2.TrainRequest,
    report: Callable[[common_pb2.TrainProgress], None],
    aborted: threading.Event,
) -> tuple[common_pb2.TrainResult, bytes | None]:
    """The trainer's training function on this thread, one torch thread, on the CPU."""
    job = job_from_proto(request, _CATALOG)
    outcome = train(
        job.arch,
        num_classes=job.build.num_classes,
        resolution=job.build.resolution,
        width=job.build.width,
        config=job.training,
        on_progress=lambda progress: report(progress_to_proto(progress)),
        cancelled=aborted.is_set,
        threads=1,
        keep_weights=job.keep_weights,
    )
    return outcome_to_proto(outcome), outcome.weights


def instant_training(
    request: trainer_pb2.TrainRequest,
    report: Callable[[common_pb2.TrainProgress], None],
    aborted: threading.Event,
) -> tuple[common_pb2.TrainResult, bytes | None]:
    """Trains nothing and answers at once: accuracy 0.5."""
    return common_pb2.TrainResult(accuracy=0.5, samples_seen=1), None


def _worker_error(kind: str, address: str, err: BaseException, *, answered: bool) -> WorkerError:
    """``err`` as the gRPC client would report the status the service answers it with."""
    message = f"{kind} {address}: {type(err).__name__}: {err}"
    if isinstance(err, _PERMANENT):
        return WorkerError(message, retryable=False, endpoint_failed=False)
    if isinstance(err, CapacityExhausted):
        return WorkerError(message, retryable=True, endpoint_failed=False, busy=not answered)
    return WorkerError(message, retryable=True, endpoint_failed=True)


class InProcessWorkers:
    """One trainer endpoint of ``trainer_capacity`` slots running ``training``, offering
    Fashion-MNIST; one latency endpoint measuring with ``latency`` (this machine's CPU by
    default); the reward computed here."""

    def __init__(
        self,
        training: TrainFn = real_training,
        *,
        latency: LatencyService | None = None,
        trainer_capacity: int = 1,
    ) -> None:
        self._training = training
        self._latency = latency or LatencyService([HostOracle()])
        self._slots = {"trainer-0": Slots(trainer_capacity)}
        self._datasets = {FASHION_MNIST.name: FASHION_MNIST}
        self._trainers = WorkerPool("trainer", list(self._slots), self._trainer_capacity)
        self._latency_pool = WorkerPool("latency", ["latency-0"], lambda _: self._latency.capacity)

    @property
    def trainers(self) -> WorkerPool:
        return self._trainers

    @property
    def latency(self) -> WorkerPool:
        return self._latency_pool

    def _trainer_capacity(self, address: str) -> int:
        return self._slots[address].capacity

    def device_classes(self) -> set[str]:
        return set(self._latency.device_classes)

    def datasets(self, name: str = "") -> DatasetOffers:
        offers = {address: dict(self._datasets) for address in self._slots}
        problems = {}
        if name and name not in self._datasets:
            problems = {address: f"unknown data set {name!r}" for address in self._slots}
        return DatasetOffers(offers, problems)

    def measure(
        self,
        address: str,
        request: latency_pb2.MeasureRequest,
        *,
        register_cancel: RegisterCancel | None = None,
    ) -> latency_pb2.MeasureResponse:
        relay: Relay[None, latency_pb2.MeasureResponse] = Relay(
            lambda report, aborted: self._measure(request)
        )
        if register_cancel is not None:
            register_cancel(relay.abort)
        try:
            return relay.wait(lambda _: None)
        except Aborted:
            raise WorkerError(
                f"latency {address}: measurement cancelled", retryable=False, endpoint_failed=False
            ) from None
        except Failed as failed:
            raise _worker_error("latency", address, failed.error, answered=False) from None

    def _measure(self, request: latency_pb2.MeasureRequest) -> latency_pb2.MeasureResponse:
        device_class, settings = settings_from_proto(request.settings)
        measurement = self._latency.measure(
            request.architecture.canonical,
            build=build_from_proto(request.build, request.settings),
            settings=settings,
            device_class=device_class,
        )
        return latency_pb2.MeasureResponse(
            stats=stats_to_proto(measurement),
            cached=measurement.cached,
            export_seconds=measurement.export_seconds,
        )

    def train(
        self,
        address: str,
        request: trainer_pb2.TrainRequest,
        *,
        on_progress: Callable[[common_pb2.TrainProgress], None],
        register_cancel: RegisterCancel,
    ) -> tuple[common_pb2.TrainResult, bytes | None]:
        slots = self._slots[address]
        try:
            slots.take()
        except CapacityExhausted as err:
            raise _worker_error("trainer", address, err, answered=False) from None

        def work(
            report: Callable[[common_pb2.TrainProgress], None], aborted: threading.Event
        ) -> tuple[common_pb2.TrainResult, bytes | None]:
            try:
                return self._training(request, report, aborted)
            finally:
                slots.give_back()

        relay: Relay[common_pb2.TrainProgress, tuple[common_pb2.TrainResult, bytes | None]]
        relay = Relay(work)
        register_cancel(relay.abort)
        answered = False

        def relay_progress(progress: common_pb2.TrainProgress) -> None:
            nonlocal answered
            answered = True
            on_progress(progress)  # what it raises propagates

        try:
            result, weights = relay.wait(relay_progress)
        except Aborted:
            raise WorkerError(
                f"trainer {address}: training cancelled", retryable=False, endpoint_failed=False
            ) from None
        except Failed as failed:
            raise _worker_error("trainer", address, failed.error, answered=answered) from None
        finally:
            relay.abort()  # ends the training when left early; a no-op when it has ended
        return result, weights if request.training.return_weights else None

    def score(self, request: reward_pb2.ScoreRequest) -> float:
        try:
            return reward(
                request.accuracy, request.latency_seconds, objective_from_proto(request.objective)
            )
        except Exception as err:
            raise _worker_error("reward", "in-process", err, answered=False) from None

    def close(self) -> None:
        self._trainers.close()
        self._latency_pool.close()
