"""One suite for every implementation of the controller's workers
(:class:`~services.controller.backends.Workers`): the controller runs searches through
each alike, and each keeps the calls' contract.

``grpc``: :class:`~services.controller.clients.Backends` calling a trainer, the real
latency service and the real reward service on loopback; ``in-process``:
:class:`~tests.common.local_workers.InProcessWorkers` calling their cores. Both measure
for real (LiteRT on this CPU) and score for real; the trainings are scripted, since what
is under test is what the controller does with a trainer's answers.
"""

from __future__ import annotations

import contextlib
import itertools
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from mnas.errors import InvalidInput
from mnas.v1 import common_pb2, trainer_pb2
from services.controller.backends import Workers
from services.controller.clients import Backends
from services.controller.core import Controller
from services.controller.metrics import ControllerMetrics
from services.controller.store import Store
from services.latency.oracle import HostOracle, LatencyOracle
from services.latency.server import make_server as make_latency_server
from services.latency.service import LatencyService
from services.reward.server import make_server as make_reward_server
from services.trainer.isolation import TrialFailed
from services.trainer.server import CapacityExhausted
from tests.common.blocked_oracle import BlockedOracle
from tests.common.fake_trainer import ServedTraining, serve
from tests.common.local_workers import InProcessWorkers, TrainFn, real_training
from tests.common.tiny_spec import tiny_spec

WAIT_SECONDS = 120.0  # a bound for a hung test, never reached when things work
TS = common_pb2.TrialState
SS = common_pb2.SearchState


def spec(*, trials: int = 1, parallel: int = 1, budget: str = "") -> common_pb2.SearchSpec:
    """The four-network spec of the tests, with ``budget``'s fields added to its budget."""
    return tiny_spec("conformance", trials=trials, parallel=parallel, budget=budget)


def result(accuracy: float = 0.5) -> common_pb2.TrainResult:
    return common_pb2.TrainResult(accuracy=accuracy, loss=1.0, seconds=0.01, samples_seen=40)


class Harness:
    """Makes workers of one implementation, and controllers on them, for one test."""

    def __init__(self, kind: str, tmp_path: Path, stack: contextlib.ExitStack) -> None:
        self.kind = kind
        self._tmp_path = tmp_path
        self._stack = stack

    def workers(self, training: TrainFn, *, oracle: LatencyOracle | None = None) -> Workers:
        """Workers that train with ``training`` and measure on ``oracle`` (this machine's
        CPU by default)."""
        oracles = [oracle or HostOracle()]
        if self.kind == "in-process":
            local = InProcessWorkers(training, latency=LatencyService(oracles))
            self._stack.callback(local.close)
            return local
        servers = [
            serve(ServedTraining(training)),
            make_latency_server(registry=CollectorRegistry(), oracles=oracles),
            make_reward_server(registry=CollectorRegistry()),
        ]
        for server in servers:
            self._stack.callback(server.stop, 0)
        trainer, latency, reward = (server.address for server in servers)
        remote = Backends(trainers=[trainer], latency=[latency], reward=reward)
        self._stack.callback(remote.close)
        return remote

    def controller(self, training: TrainFn, *, oracle: LatencyOracle | None = None) -> Controller:
        store = Store.open(str(self._tmp_path / "mnas.db"))
        self._stack.callback(store.close)
        workers = self.workers(training, oracle=oracle)
        core = Controller(store, workers, ControllerMetrics(CollectorRegistry()))
        self._stack.callback(core.shutdown)
        return core


@pytest.fixture(params=["grpc", "in-process"])
def harness(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Harness]:
    with contextlib.ExitStack() as stack:
        yield Harness(request.param, tmp_path, stack)


def run(core: Controller, search_spec: common_pb2.SearchSpec) -> common_pb2.Search:
    search = core.submit(search_spec)
    final = core.wait(search.id, timeout=WAIT_SECONDS)
    assert final.state != SS.SEARCH_STATE_RUNNING, "the search did not end"
    return final


def trials(core: Controller, search_id: str) -> list[common_pb2.Trial]:
    return core.trials(search_id)[0]


class Scripted:
    """A training that fails its first calls with ``errors`` (one each), then reports
    progress at steps 10, 20 and 30 of 40 and ends with a result and weights."""

    def __init__(self, *errors: Exception) -> None:
        self.errors = list(errors)
        self.calls = 0
        self._lock = threading.Lock()

    def __call__(
        self,
        request: trainer_pb2.TrainRequest,
        report: Callable[[common_pb2.TrainProgress], None],
        aborted: threading.Event,
    ) -> tuple[common_pb2.TrainResult, bytes | None]:
        with self._lock:
            self.calls += 1
            error = self.errors.pop(0) if self.errors else None
        if error is not None:
            raise error
        for step, accuracy in [(10, 0.3), (20, 0.4), (30, 0.5)]:
            report(common_pb2.TrainProgress(step=step, total_steps=40, accuracy=accuracy))
        return result(0.6), request.architecture.canonical.encode()


# -- searches ----------------------------------------------------------------------------


def test_a_search_runs_to_success(harness: Harness) -> None:
    training = Scripted()
    core = harness.controller(training)
    final = run(core, spec(trials=3, parallel=2))
    assert final.state == SS.SEARCH_STATE_SUCCEEDED, final.error
    done = trials(core, final.id)
    assert final.trials_completed == len(done) == training.calls == 3
    for trial in done:
        assert trial.state == TS.TRIAL_STATE_COMPLETED
        assert trial.attempts == 1
        assert trial.training.accuracy == pytest.approx(0.6)
        assert trial.latency.device_class == "host-cpu"
        assert trial.latency.median_seconds > 0
        assert trial.reward > 0
    assert final.best_reward == max(t.reward for t in done)


def test_progress_reaches_the_trial_and_weights_the_store(harness: Harness) -> None:
    core = harness.controller(Scripted())
    final = run(core, spec(budget="keep_weights: 1"))
    assert final.state == SS.SEARCH_STATE_SUCCEEDED, final.error
    (trial,) = trials(core, final.id)
    assert [(e.step, round(e.accuracy, 6)) for e in trial.evaluations] == [
        (10, 0.3),
        (20, 0.4),
        (30, 0.5),
    ]
    assert trial.total_steps == 40
    assert trial.has_weights
    assert core.weights(final.id, trial.number) == trial.architecture.canonical.encode()


def test_a_cancel_aborts_the_training_in_flight(harness: Harness) -> None:
    started = threading.Event()
    saw_abort = threading.Event()

    def held(
        request: trainer_pb2.TrainRequest,
        report: Callable[[common_pb2.TrainProgress], None],
        aborted: threading.Event,
    ) -> tuple[common_pb2.TrainResult, bytes | None]:
        report(common_pb2.TrainProgress(step=1, total_steps=40, accuracy=0.2))
        started.set()
        if aborted.wait(WAIT_SECONDS):
            saw_abort.set()
        raise TrainingCancelledHere

    core = harness.controller(held)
    search = core.submit(spec())
    assert started.wait(WAIT_SECONDS)
    final = core.cancel(search.id)
    assert final.state == SS.SEARCH_STATE_CANCELLED
    (trial,) = trials(core, search.id)
    assert trial.state == TS.TRIAL_STATE_CANCELLED
    assert trial.attempts == 1  # the abort is not a failed attempt
    assert saw_abort.wait(WAIT_SECONDS)  # the training itself was told


def test_a_cancel_does_not_wait_for_the_measurement_in_flight(harness: Harness) -> None:
    """The measurement is still blocked when the cancel has returned: the controller
    aborted its call instead of waiting out the measurement."""
    oracle = BlockedOracle(timeout=WAIT_SECONDS)
    try:
        core = harness.controller(Scripted(), oracle=oracle)
        search = core.submit(spec())
        assert oracle.entered.wait(WAIT_SECONDS)
        final = core.cancel(search.id)
        assert not oracle.release.is_set()  # the measurement has not finished
    finally:
        oracle.release.set()
    assert final.state == SS.SEARCH_STATE_CANCELLED
    (trial,) = trials(core, search.id)
    assert trial.state == TS.TRIAL_STATE_CANCELLED
    assert trial.attempts == 1  # the abort was not counted as a failed attempt


class TrainingCancelledHere(Exception):
    """What the held training raises once aborted (the caller has gone by then)."""


@pytest.mark.parametrize(
    ("error", "state", "attempts"),
    [
        (RuntimeError("worker lost"), TS.TRIAL_STATE_COMPLETED, 2),
        (InvalidInput("training.steps: must be >= 0"), TS.TRIAL_STATE_FAILED, 1),
        (TrialFailed("out of memory"), TS.TRIAL_STATE_FAILED, 1),
    ],
    ids=["internal-error-is-retried", "bad-input-is-not", "failed-training-is-not"],
)
def test_a_worker_failure_is_retried_unless_the_trial_is_at_fault(
    harness: Harness, error: Exception, state: int, attempts: int
) -> None:
    training = Scripted(error)
    core = harness.controller(training)
    final = run(core, spec())
    first = trials(core, final.id)[0]  # a failed trial is replaced by another
    assert first.state == state, first.error
    assert first.attempts == attempts
    if state == TS.TRIAL_STATE_FAILED:
        assert str(error) in first.error


def test_busy_refusals_use_no_attempts(harness: Harness) -> None:
    training = Scripted(CapacityExhausted("busy"), CapacityExhausted("busy"))
    core = harness.controller(training)
    final = run(core, spec(budget="max_attempts: 1"))
    assert final.state == SS.SEARCH_STATE_SUCCEEDED, final.error
    (trial,) = trials(core, final.id)
    assert trial.state == TS.TRIAL_STATE_COMPLETED
    assert trial.attempts == 1
    assert training.calls == 3


# -- the calls' contract -----------------------------------------------------------------


class StopHere(Exception):
    pass


def test_what_on_progress_raises_propagates_and_the_abort_reaches_the_training(
    harness: Harness,
) -> None:
    saw_abort = threading.Event()

    def endless(
        request: trainer_pb2.TrainRequest,
        report: Callable[[common_pb2.TrainProgress], None],
        aborted: threading.Event,
    ) -> tuple[common_pb2.TrainResult, bytes | None]:
        for step in itertools.count(1):
            report(common_pb2.TrainProgress(step=step, total_steps=1000))
            if aborted.wait(0.01):  # paces the reports of a training that never ends
                saw_abort.set()
                raise TrainingCancelledHere
        raise AssertionError("unreachable")

    workers = harness.workers(endless)
    address = workers.trainers.acquire()
    aborts: list[Callable[[], None]] = []
    steps: list[int] = []

    def on_progress(progress: common_pb2.TrainProgress) -> None:
        steps.append(progress.step)
        if progress.step == 3:
            raise StopHere

    with pytest.raises(StopHere):
        workers.train(
            address,
            trainer_pb2.TrainRequest(),
            on_progress=on_progress,
            register_cancel=aborts.append,
        )
    assert steps == [1, 2, 3]
    for abort in aborts:
        abort()
    assert saw_abort.wait(WAIT_SECONDS)
    workers.trainers.release(address)


def test_the_workers_offer_the_host_cpu_and_fashion_mnist(harness: Harness) -> None:
    workers = harness.workers(Scripted())
    assert "host-cpu" in workers.device_classes()
    offers = workers.datasets("fashion-mnist")
    assert offers.problems == {}
    (offered,) = offers.by_endpoint.values()
    assert offered["fashion-mnist"].classes == 10


def test_the_in_process_workers_train_with_the_trainers_own_function(tmp_path: Path) -> None:
    with contextlib.ExitStack() as stack:
        core = Harness("in-process", tmp_path, stack).controller(real_training)
        search_spec = spec()
        search_spec.training.MergeFrom(
            common_pb2.Training(
                train_examples=100,
                validation_examples=50,
                steps=4,
                batch_size=10,
                evaluate_every_steps=2,
            )
        )
        final = run(core, search_spec)
        assert final.state == SS.SEARCH_STATE_SUCCEEDED, final.error
        (trial,) = trials(core, final.id)
    assert 0.0 <= trial.training.accuracy <= 1.0
    assert trial.training.samples_seen == 40
    assert [e.step for e in trial.evaluations] == [2]
