"""The reference network: trained once per search beside the trials, never one of them,
stored with the search, shown by the SDK and the CLI, and not trained again by a
controller that resumes the search.

The controller is real, on loopback; its workers are in process: the latency service's
core (real LiteRT), the reward function, and a training that answers at once and tells
the reference's trainings from the trials' by the architecture it is sent.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from mnas import references
from mnas.cli import main
from mnas.client import Client
from mnas.results import ReferenceState, SearchState
from mnas.specfile import parse_spec
from mnas.v1 import common_pb2, trainer_pb2
from services.common.server import RunningServer
from services.controller.core import Controller
from services.controller.metrics import ControllerMetrics
from services.controller.server import make_server
from services.controller.store import Store
from services.latency.oracle import HostOracle
from services.latency.service import LatencyService
from services.trainer.isolation import TrialFailed
from services.trainer.training import TrainingCancelled
from tests.common.local_workers import InProcessWorkers

RS = common_pb2.ReferenceState
REFERENCE_ACCURACY = 0.8125
TRIAL_ACCURACY = 0.5
MNASNET_A1 = references.get("mnasnet-a1").canonical

# A space of exactly one architecture (cheap to measure).
SPEC = """
duplicates: DUPLICATE_POLICY_RETRAIN
space:
  resolution: 28
  width: 0.5
  stages: [{expansion: 1, filters: 16, layers: 1, stride: 1}]
  choices: {ops: [dconv], kernels: [3], se_ratios: [0], skips: [identity],
            filter_ratios: [1], layer_deltas: [0]}
objective: {kind: soft, target_latency_seconds: 0.001}
budget: {max_trials: %(trials)d, parallel_trials: 1}
training: {train_examples: 100, validation_examples: 50, steps: 2, batch_size: 10}
latency: {warmup_runs: 1, runs: 2}
"""


def spec(reference: str, trials: int = 3) -> common_pb2.SearchSpec:
    """The spec with ``reference`` (empty: the default)."""
    text = SPEC % {"trials": trials}
    return parse_spec(text + (f"reference: {reference}\n" if reference else ""))


class ReferenceTrainer:
    """A training that trains nothing. MnasNet-A1 (the reference of most tests) gets
    REFERENCE_ACCURACY, or fails as out of memory with ``fail_reference``; any other
    network is a trial's and gets the next of ``accuracies`` (TRIAL_ACCURACY once they run
    out). While ``hold["trial"]`` (``hold["reference"]``) is set, those trainings wait for
    it to be cleared, or for their abort, and ``held[...]`` says one is waiting."""

    def __init__(self) -> None:
        self.fail_reference = False
        self.accuracies: list[float] = []
        self.calls: list[str] = []  # canonical forms, in the order the calls came
        self.hold = {"trial": threading.Event(), "reference": threading.Event()}
        self.held = {"trial": threading.Event(), "reference": threading.Event()}
        self._lock = threading.Lock()

    def __call__(
        self,
        request: trainer_pb2.TrainRequest,
        report: Callable[[common_pb2.TrainProgress], None],
        aborted: threading.Event,
    ) -> tuple[common_pb2.TrainResult, bytes | None]:
        canonical = request.architecture.canonical
        with self._lock:
            self.calls.append(canonical)
            accuracy = self.accuracies.pop(0) if self.accuracies else TRIAL_ACCURACY
        kind = "reference" if canonical == MNASNET_A1 else "trial"
        while self.hold[kind].is_set():
            self.held[kind].set()
            if aborted.wait(0.02):  # pacing the poll of a held training
                raise TrainingCancelled("training cancelled")
        if kind == "reference":
            if self.fail_reference:
                raise TrialFailed("training ran out of memory (scripted)")
            accuracy = REFERENCE_ACCURACY
        return common_pb2.TrainResult(accuracy=accuracy, samples_seen=1), None

    def reference_calls(self) -> int:
        return self.calls.count(MNASNET_A1)


class Workers:
    """In-process workers (two trainer slots) for controllers started and stopped on one
    store file, as a controller restarted in place."""

    def __init__(self, tmp_path: Path, trainer: ReferenceTrainer) -> None:
        self.store_path = tmp_path / "mnas.db"
        self.trainer = trainer
        self.latency = LatencyService([HostOracle()])
        self.stores: list[Store] = []

    def controller(self) -> tuple[RunningServer, Controller]:
        """A controller on the store, with every running search it holds resumed."""
        store = Store.open(str(self.store_path))
        self.stores.append(store)
        workers = InProcessWorkers(self.trainer, latency=self.latency, trainer_capacity=2)
        core = Controller(store, workers, ControllerMetrics(CollectorRegistry()))
        core.resume()
        return make_server(core, registry=CollectorRegistry()), core

    def stored(self, search_id: str) -> common_pb2.Search | None:
        """The search as the store file holds it now."""
        store = Store.open(str(self.store_path))
        try:
            return store.get_search(search_id)
        finally:
            store.close()

    def close(self) -> None:
        for store in self.stores:
            store.close()


@pytest.fixture
def trainer() -> ReferenceTrainer:
    return ReferenceTrainer()


@pytest.fixture
def workers(tmp_path: Path, trainer: ReferenceTrainer) -> Iterator[Workers]:
    running = Workers(tmp_path, trainer)
    yield running
    running.close()


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    code = main(list(args))
    out, err = capsys.readouterr()
    assert code == 0, err
    return out


def test_the_space_reference_is_trained_once_beside_the_trials(
    workers: Workers, trainer: ReferenceTrainer, capsys: pytest.CaptureFixture[str]
) -> None:
    """The default reference (the space's own network, which in this one-network space is
    also every trial's) costs one training more than the trials, whose accuracy the search
    keeps apart from theirs; the CLI prints it beside the best trials."""
    answers = [0.61, 0.62, 0.63, 0.64]
    trainer.accuracies = list(answers)
    server, _ = workers.controller()
    try:
        with Client(server.address) as client:
            search = client.submit(spec("", trials=3))
            pending = search.reference
            assert pending is not None and pending.state in (
                ReferenceState.PENDING,
                ReferenceState.MEASURED,
            )
            final = search.wait(timeout=120)
            trials = list(search.trials())
            best = run_cli(capsys, "best", search.id, "--target", server.address)
            listed = {s.id: s for s in client.searches()}[search.id]
    finally:
        server.stop(0)
    assert final.state is SearchState.SUCCEEDED, final.error
    assert len(trainer.calls) == 4  # three trials and the reference, once
    reference = search.reference
    assert reference is not None and reference.state is ReferenceState.MEASURED
    assert reference.name == "space" and reference.attempts == 1 and not reference.error
    space_net = trials[0].architecture
    assert reference.architecture == space_net  # the space's reference network
    # The reference's answer is its own; the trials have the other three.
    accuracies = [reference.accuracy, *(t.accuracy for t in trials)]
    assert sorted(a or 0.0 for a in accuracies) == answers  # none is missing
    # Not a trial: not numbered, not counted, not observed, not the best.
    assert [t.number for t in trials] == [0, 1, 2]
    assert final.trials_completed == 3 and final.trials_failed == 0
    assert final.strategy_status.observed == 3
    assert final.best_trial in {0, 1, 2}
    assert listed.reference == final.reference  # ListSearches shows it too
    stored = workers.stored(search.id)
    assert stored is not None and stored.reference == final.proto.reference
    line = (
        "reference mobilenetv2-like (space reference) at width 0.5, 28x28: held-out accuracy "
        f"{reference.accuracy:.4f} on the same proxy"
    )
    assert line in best.splitlines(), best
    assert best.index(line) < best.index("best 3 by reward")


def test_each_search_measures_its_reference_and_none_skips_it(
    workers: Workers, trainer: ReferenceTrainer, capsys: pytest.CaptureFixture[str]
) -> None:
    server, _ = workers.controller()
    try:
        with Client(server.address) as client:
            first = client.submit(spec("mnasnet-a1", trials=1))
            first.wait(timeout=120)
            second = client.submit(spec("mnasnet-a1", trials=1))
            second.wait(timeout=120)
            assert trainer.reference_calls() == 2  # once per search, not once per store
            calls = len(trainer.calls)
            skipped = client.submit(spec("none", trials=1))
            final = skipped.wait(timeout=120)
            out = run_cli(capsys, "best", skipped.id, "--target", server.address)
    finally:
        server.stop(0)
    assert final.state is SearchState.SUCCEEDED, final.error
    assert len(trainer.calls) == calls + 1  # its one trial only
    assert skipped.reference is None and final.reference is None
    assert not final.proto.HasField("reference")
    assert "reference" not in out
    for search in (first, second):
        assert search.reference is not None
        assert search.reference.accuracy == REFERENCE_ACCURACY
        assert search.reference.architecture == MNASNET_A1


def test_a_resumed_search_keeps_its_measured_reference(
    workers: Workers, trainer: ReferenceTrainer
) -> None:
    """The reference is measured while a trial trains; the controller stops and another
    starts on the same store: the search completes without training the reference again."""
    trainer.hold["trial"].set()
    server, _ = workers.controller()
    try:
        with Client(server.address) as client:
            search = client.submit(spec("mnasnet-a1", trials=2))
            assert trainer.held["trial"].wait(60), "no trial started"
            deadline = time.monotonic() + 60
            while search.refresh().proto.reference.state != RS.REFERENCE_STATE_MEASURED:
                assert time.monotonic() < deadline, "the reference was never measured"
                time.sleep(0.05)  # pacing the poll
            before = search.proto.reference
            assert search.info.trials_completed == 0
    finally:
        server.stop(0)  # the controller shuts down; the search stays running in the store
    stored = workers.stored(search.id)
    assert stored is not None and stored.state == common_pb2.SEARCH_STATE_RUNNING
    assert stored.reference == before

    trainer.hold["trial"].clear()
    server, _ = workers.controller()
    try:
        with Client(server.address) as client:
            resumed = client.search(search.id)
            final = resumed.wait(timeout=120)
            trials = list(resumed.trials())
    finally:
        server.stop(0)
    assert final.state is SearchState.SUCCEEDED, final.error
    assert trainer.reference_calls() == 1
    assert final.proto.reference == before
    assert final.reference is not None and final.reference.accuracy == REFERENCE_ACCURACY
    assert final.trials_completed == 2 and [t.number for t in trials] == [0, 1]
    assert all(t.architecture != MNASNET_A1 for t in trials)


def test_a_search_waits_for_its_reference_and_a_restart_measures_a_pending_one(
    workers: Workers, trainer: ReferenceTrainer
) -> None:
    """The trials end while the reference still trains: the search goes on until it is
    measured. A controller stopped before then leaves it pending, and the one that resumes
    the search measures it."""
    trainer.hold["reference"].set()
    server, _ = workers.controller()
    try:
        with Client(server.address) as client:
            search = client.submit(spec("mnasnet-a1", trials=1))
            assert trainer.held["reference"].wait(60), "the reference never started"
            deadline = time.monotonic() + 60
            while search.refresh().trials_completed < 1:
                assert time.monotonic() < deadline, "the trial never completed"
                time.sleep(0.05)  # pacing the poll
            time.sleep(0.5)  # the scheduler had its chance to end the search
            info = search.refresh()
            assert info.state is SearchState.RUNNING
            assert info.reference is not None and info.reference.state is ReferenceState.PENDING
    finally:
        server.stop(0)
    stored = workers.stored(search.id)
    assert stored is not None and stored.state == common_pb2.SEARCH_STATE_RUNNING
    assert stored.reference.state == RS.REFERENCE_STATE_PENDING

    trainer.hold["reference"].clear()
    server, _ = workers.controller()
    try:
        with Client(server.address) as client:
            final = client.search(search.id).wait(timeout=120)
    finally:
        server.stop(0)
    assert final.state is SearchState.SUCCEEDED, final.error
    assert final.reference is not None and final.reference.state is ReferenceState.MEASURED
    assert final.reference.accuracy == REFERENCE_ACCURACY
    assert trainer.reference_calls() == 2  # cut off by the stop, then measured once
    assert final.trials_completed == 1


def test_a_failed_reference_does_not_fail_the_search(
    workers: Workers, trainer: ReferenceTrainer, capsys: pytest.CaptureFixture[str]
) -> None:
    trainer.fail_reference = True
    server, _ = workers.controller()
    try:
        with Client(server.address) as client:
            search = client.submit(spec("mnasnet-a1", trials=2))
            final = search.wait(timeout=120)
            out = run_cli(capsys, "best", search.id, "--target", server.address)
    finally:
        server.stop(0)
    assert final.state is SearchState.SUCCEEDED, final.error
    assert final.trials_completed == 2 and final.trials_failed == 0
    assert trainer.reference_calls() == 1  # the trainer's verdict on the network: no retry
    reference = final.reference
    assert reference is not None and reference.state is ReferenceState.FAILED
    assert "out of memory" in reference.error and reference.accuracy is None
    assert not reference.proto.HasField("training")
    line = next(line for line in out.splitlines() if line.startswith("reference "))
    assert line.startswith("reference mnasnet-a1 at width 0.5, 28x28: failed (")
    assert "out of memory" in line
