"""A search's calls to its workers: measure a trial, train it, score it, and train the
search's reference network, each abortable by a cancel of the search.

Each call takes a slot on an endpoint from the worker pools and gives the controller's
work gate up while it waits for the worker (:mod:`services.controller.gate`); a cancel of
the search aborts every call in flight (:meth:`TrialCalls.abort_all`). What a call
produced that the search records later (a trial's measurement for the store's cache, its
trained weights) waits in :attr:`TrialCalls.measured` and :attr:`TrialCalls.weights`.
The runner (:mod:`services.controller.runner`) decides what to call, and what a failure
means for the trial.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable

from mnas.latency import is_predicted, reported_seconds
from mnas.v1 import common_pb2, latency_pb2, reward_pb2, trainer_pb2
from services.controller.backends import TrialWorkers, WorkerError
from services.controller.gate import WorkGate
from services.controller.metrics import ControllerMetrics, SearchMetrics
from services.controller.spec import ResolvedSpec
from services.controller.stopping import MedianStopping
from services.controller.store import Store, measurement_key
from services.controller.workers import NoWorkers, WorkerPool

__all__ = ["Cancelled", "Stopped", "TrialCalls"]

_logger = logging.getLogger(__name__)

RS = common_pb2.ReferenceState
# The reference's training among the calls in flight to abort (trial numbers are >= 0).
_REFERENCE = -1


class Cancelled(Exception):
    """The search was cancelled (or is stopping) while the call waited or ran."""


class Stopped(Exception):
    """The stopping rule ended the training at ``progress``."""

    def __init__(self, progress: common_pb2.TrainProgress) -> None:
        super().__init__(f"stopped at step {progress.step}")
        self.progress = progress


class TrialCalls:
    """One search's calls to its workers."""

    def __init__(
        self,
        resolved: ResolvedSpec,
        *,
        search_id: str,
        store: Store,
        backends: TrialWorkers,
        gate: WorkGate,
        metrics: ControllerMetrics,
        search_metrics: SearchMetrics,
        cancel: threading.Event,
        rule: MedianStopping | None,
    ) -> None:
        self.resolved = resolved
        self.spec = resolved.spec
        self._search_id = search_id
        self._store = store
        self._backends = backends
        self._gate = gate
        self._metrics = metrics
        self._search_metrics = search_metrics
        self._cancel = cancel
        self._rule = rule
        self._lock = threading.Lock()
        self._aborts: dict[int, list[Callable[[], None]]] = {}  # by trial number
        self.weights: dict[int, bytes] = {}  # trained, not yet recorded
        self.measured: dict[int, tuple[str, common_pb2.LatencyStats]] = {}  # not yet recorded

    def abort_all(self) -> None:
        """Abort every call in flight (the search's cancel event is set already)."""
        with self._lock:
            aborts = [abort for fns in self._aborts.values() for abort in fns]
        for abort in aborts:
            abort()

    def forget(self, key: int) -> None:
        """The calls of trial ``key`` are over: nothing of it is left to abort."""
        with self._lock:
            self._aborts.pop(key, None)

    def check_cancel(self) -> None:
        if self._cancel.is_set():
            raise Cancelled

    def acquire(self, pool: WorkerPool, avoid: set[str]) -> str:
        started = time.monotonic()
        try:
            with self._gate.released():
                return pool.acquire(avoid=avoid, cancelled=self._cancel.is_set)
        except NoWorkers:
            raise Cancelled from None
        finally:
            self._search_metrics.phase("queued", time.monotonic() - started)

    def measure(self, trial: common_pb2.Trial, avoid: set[str]) -> None:
        key = measurement_key(trial.architecture.id, self.spec.latency, self.resolved.latency_build)
        # A prediction costs less than a store read and changes when its predictor is
        # calibrated again: predicted classes are asked every time, not recorded.
        predicted = is_predicted(self.spec.latency.device_class)
        recorded = None if predicted else self._store.find_measurement(key)
        if recorded is not None:  # measured before, in this search or another
            trial.latency.CopyFrom(recorded)
            trial.latency_worker = "store"
            return
        address = self.acquire(self._backends.latency, avoid)
        request = latency_pb2.MeasureRequest(
            architecture=common_pb2.Architecture(canonical=trial.architecture.canonical),
            build=self.resolved.latency_build,
            settings=self.spec.latency,
        )
        started = time.monotonic()
        failed = busy = False
        try:
            with self._gate.released():
                response = self._backends.measure(
                    address, request, register_cancel=self.abort_on_cancel(trial.number)
                )
        except WorkerError as err:
            self.check_cancel()  # aborted by a cancel: not the endpoint's failure
            failed = err.endpoint_failed
            busy = err.busy
            avoid.add(address)
            self._metrics.trial_attempts.labels("latency", "busy" if busy else "failed").inc()
            raise
        finally:
            with self._lock:
                self._aborts.pop(trial.number, None)
            self._backends.latency.release(address, failed=failed, busy=busy)
            self._search_metrics.phase("measuring", time.monotonic() - started)
        self._metrics.trial_attempts.labels("latency", "ok").inc()
        trial.latency.CopyFrom(response.stats)
        trial.latency_worker = address
        if not predicted:
            self.measured[trial.number] = (key, response.stats)
        trial.latency_seconds = time.monotonic() - started
        trial.export_seconds = response.export_seconds
        self._metrics.model_latency.labels(response.stats.device_class).observe(
            reported_seconds(response.stats)
        )

    def train(self, trial: common_pb2.Trial, avoid: set[str]) -> None:
        address = self.acquire(self._backends.trainers, avoid)
        request = trainer_pb2.TrainRequest(
            architecture=common_pb2.Architecture(canonical=trial.architecture.canonical),
            build=self.resolved.build,
            training=self.spec.training,
        )
        started = time.monotonic()
        del trial.evaluations[:]
        best = -math.inf

        def on_progress(progress: common_pb2.TrainProgress) -> None:
            nonlocal best
            trial.total_steps = progress.total_steps
            if not progress.HasField("accuracy"):
                return
            trial.evaluations.add(step=progress.step, accuracy=progress.accuracy)
            best = max(best, progress.accuracy)
            if self._rule is not None and self._rule.should_stop(progress.step, best):
                raise Stopped(progress)

        try:
            result, weights = self.training(trial.number, address, request, on_progress)
        except Stopped:
            self._metrics.trial_attempts.labels("trainer", "stopped").inc()
            raise
        except WorkerError as err:
            avoid.add(address)
            self._metrics.trial_attempts.labels("trainer", "busy" if err.busy else "failed").inc()
            raise
        finally:
            trial.trainer = address
            trial.train_seconds = time.monotonic() - started
            self._search_metrics.phase("training", trial.train_seconds)
        self._metrics.trial_attempts.labels("trainer", "ok").inc()
        trial.training.CopyFrom(result)
        if weights is not None:
            self.weights[trial.number] = weights

    def training(
        self,
        key: int,
        address: str,
        request: trainer_pb2.TrainRequest,
        on_progress: Callable[[common_pb2.TrainProgress], None],
    ) -> tuple[common_pb2.TrainResult, bytes | None]:
        """Run one training on ``address``, whose slot the caller took: a cancel of the
        search aborts it (as ``key`` among the aborts), and ``Stopped`` from
        ``on_progress`` ends it. The slot is given back; the endpoint is benched when it
        failed, and paused when it refused the job for want of a free slot."""
        failed = busy = False
        aborts: list[Callable[[], None]] = []
        on_cancel = self.abort_on_cancel(key)

        def register(abort: Callable[[], None]) -> None:
            aborts.append(abort)
            on_cancel(abort)

        try:
            with self._gate.released():
                return self._backends.train(
                    address, request, on_progress=on_progress, register_cancel=register
                )
        except Stopped:
            for abort in aborts:
                abort()
            raise
        except WorkerError as err:
            failed = err.endpoint_failed and not self._cancel.is_set()
            busy = err.busy
            raise
        finally:
            with self._lock:
                self._aborts.pop(key, None)
            self._backends.trainers.release(address, failed=failed, busy=busy)

    def abort_on_cancel(self, key: int) -> Callable[[Callable[[], None]], None]:
        """A function that files an abort of in-flight work under ``key``, for a cancel
        of the search to call (at once when the search is cancelled already). The caller
        pops ``key`` from the aborts when the work is over."""

        def register(abort: Callable[[], None]) -> None:
            with self._lock:
                self._aborts.setdefault(key, []).append(abort)
            if self._cancel.is_set():
                abort()

        return register

    def score(self, trial: common_pb2.Trial) -> None:
        started = time.monotonic()
        request = reward_pb2.ScoreRequest(
            accuracy=trial.training.accuracy,
            latency_seconds=reported_seconds(trial.latency),
            objective=self.spec.objective,
        )
        with self._gate.released():
            trial.reward = self._backends.score(request)
        trial.reward_seconds = time.monotonic() - started
        self._search_metrics.phase("scoring", trial.reward_seconds)

    def train_reference(self, reference: common_pb2.Reference) -> None:
        """Train ``reference`` as a trial is trained (the same build and training, retried
        on another trainer up to ``budget.max_attempts``), without early stopping or
        weights; ``reference`` ends MEASURED or FAILED."""
        request = trainer_pb2.TrainRequest(
            architecture=common_pb2.Architecture(canonical=reference.architecture.canonical),
            build=self.resolved.build,
            training=self.spec.training,
        )
        request.training.return_weights = False
        avoid: set[str] = set()
        while True:
            self.check_cancel()
            try:
                address = self._backends.trainers.acquire(
                    avoid=avoid, cancelled=self._cancel.is_set
                )
            except NoWorkers:
                raise Cancelled from None
            reference.attempts += 1
            started = time.monotonic()
            try:
                result, _ = self.training(_REFERENCE, address, request, lambda _: None)
            except WorkerError as err:
                avoid.add(address)
                self.check_cancel()
                if err.busy:  # refused at the door: no attempt was made; wait for a slot
                    reference.attempts -= 1
                    continue
                reference.error = str(err)
                if not err.retryable or reference.attempts >= self.spec.budget.max_attempts:
                    reference.state = RS.REFERENCE_STATE_FAILED
                    return
                _logger.info("search %s: reference retrying after: %s", self._search_id, err)
                continue
            finally:
                reference.trainer = address
                reference.train_seconds = time.monotonic() - started
            reference.training.CopyFrom(result)
            reference.state = RS.REFERENCE_STATE_MEASURED
            reference.error = ""
            return
