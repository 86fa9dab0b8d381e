"""The controller's per-search and worker metrics, read from a fresh registry while a real
search runs.

The controller core is real, on in-process workers: the latency service's core (real
LiteRT), the reward function, and a training with scripted answers (one fails, one is
refused and made again, one waits until the test lets it go), since what is under test is
what the controller records.
The samples-per-hour window runs on a clock the test moves.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from mnas.latency import reported_seconds
from mnas.specfile import parse_spec
from mnas.v1 import common_pb2, controller_pb2, trainer_pb2
from services.controller.core import Controller
from services.controller.metrics import (
    ENDED_SEARCHES_KEPT,
    PHASES,
    SAMPLES_WINDOW_SECONDS,
    ControllerMetrics,
)
from services.controller.runner import SearchRunner
from services.controller.store import Store
from services.trainer.isolation import TrialFailed
from services.trainer.server import CapacityExhausted
from tests.common.local_workers import InProcessWorkers

SPEC = """
strategy: random
seed: 1
space:
  resolution: 28
  stages: [{expansion: 1, filters: 16, layers: 1, stride: 1}]
  choices: {ops: [dconv], kernels: [3], se_ratios: [0], skips: [identity],
            filter_ratios: [0.5, 1], layer_deltas: [0]}
objective: {kind: soft, target_latency_seconds: 0.001}
budget: {max_trials: 3, parallel_trials: 1, max_failed_trials: 2}
latency: {warmup_runs: 1, runs: 2}
duplicates: DUPLICATE_POLICY_RETRAIN
reference: none
"""
# Train calls, one at a time: the second fails its trial (TrialFailed: the trial's fault),
# the third is refused (CapacityExhausted: no free slot) and made as the fourth, not counted
# as an attempt or a retry; the others succeed.
ACCURACIES = {1: 0.5, 4: 0.7, 5: 0.6}  # later calls reach 0.55
FAILING_CALL = 2
REFUSED_CALL = 3


class ScriptedTrainer:
    """Trains as scripted; call ``hold`` (if any) waits for ``release`` after setting
    ``entered``."""

    def __init__(self, *, hold: int | None = None) -> None:
        self.lock = threading.Lock()
        self.calls = 0
        self.hold = hold
        self.entered = threading.Event()
        self.release = threading.Event()

    def __call__(
        self,
        request: trainer_pb2.TrainRequest,
        report: Callable[[common_pb2.TrainProgress], None],
        aborted: threading.Event,
    ) -> tuple[common_pb2.TrainResult, bytes | None]:
        with self.lock:
            self.calls += 1
            call = self.calls
        if call == self.hold:
            self.entered.set()
            assert self.release.wait(60), "the test never released the training"
        if call == FAILING_CALL:
            raise TrialFailed("scripted: out of memory")
        if call == REFUSED_CALL:
            raise CapacityExhausted("scripted: busy")
        return common_pb2.TrainResult(accuracy=ACCURACIES.get(call, 0.55), samples_seen=1), None


class Clock:
    """Monotonic seconds that only the test moves."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Running:
    controller: Controller
    registry: CollectorRegistry
    clock: Clock
    trainer: ScriptedTrainer
    trainer_address: str
    latency_address: str
    store: Store

    def value(self, name: str, **labels: str) -> float | None:
        return self.registry.get_sample_value(name, labels)


def start(tmp_path: Path, trainer: ScriptedTrainer) -> Iterator[Running]:
    store = Store.open(str(tmp_path / "mnas.db"))
    workers = InProcessWorkers(trainer, trainer_capacity=2)
    registry = CollectorRegistry()
    clock = Clock()
    controller = Controller(store, workers, ControllerMetrics(registry, clock=clock))
    try:
        yield Running(controller, registry, clock, trainer, "trainer-0", "latency-0", store)
    finally:
        trainer.release.set()
        controller.shutdown(10)
        store.close()


@pytest.fixture
def running(tmp_path: Path) -> Iterator[Running]:
    yield from start(tmp_path, ScriptedTrainer())


@pytest.fixture
def holding_first(tmp_path: Path) -> Iterator[Running]:
    yield from start(tmp_path, ScriptedTrainer(hold=1))


@pytest.fixture
def holding_last(tmp_path: Path) -> Iterator[Running]:
    yield from start(tmp_path, ScriptedTrainer(hold=5))


def test_a_search_reports_its_trials_rewards_budget_and_phases(running: Running) -> None:
    search = running.controller.submit(parse_spec(SPEC), "metrics")
    final = running.controller.wait(search.id, timeout=120)
    assert final.state == common_pb2.SEARCH_STATE_SUCCEEDED, final.error
    trials, _ = running.controller.trials(search.id)
    completed = [t for t in trials if t.state == common_pb2.TRIAL_STATE_COMPLETED]
    assert len(completed) == 3 and final.trials_failed == 1
    best = next(t for t in trials if t.number == final.best_trial)
    value = running.value
    s = search.id

    for state, count in (("completed", 3), ("failed", 1), ("stopped", 0), ("cancelled", 0)):
        assert value("mnas_search_trials_finished_total", search=s, state=state) == count
    assert value("mnas_search_trials_running", search=s) == 0
    assert value("mnas_search_best_reward", search=s) == pytest.approx(final.best_reward)
    assert final.best_reward == max(t.reward for t in completed)
    assert value("mnas_search_best_accuracy", search=s) == pytest.approx(best.training.accuracy)
    assert value("mnas_search_best_latency_seconds", search=s) == pytest.approx(
        reported_seconds(best.latency)
    )
    assert value("mnas_search_budget_trials", search=s) == 3
    assert value("mnas_search_budget_failed_trials", search=s) == 2
    assert value("mnas_search_trial_seconds_count", search=s) == 4
    # A refusal for want of a slot is no attempt: the trial waits for one and goes on.
    assert value("mnas_search_trial_retries_total", search=s, kind="trainer") == 0
    attempts = "mnas_controller_trial_attempts_total"
    assert value(attempts, kind="trainer", outcome="busy") == 1
    assert value(attempts, kind="trainer", outcome="failed") == 1
    assert value(attempts, kind="trainer", outcome="ok") == 3
    assert sorted(t.attempts for t in trials) == [1, 1, 1, 1]
    assert value("mnas_search_trial_retries_total", search=s, kind="latency") == 0
    assert value("mnas_search_trial_retries_total", search=s, kind="reward") == 0

    # Accuracy and reward of the completed trials only.
    assert value("mnas_search_accuracy_count", search=s) == 3
    assert value("mnas_search_accuracy_sum", search=s) == pytest.approx(1.8)
    assert value("mnas_search_accuracy_bucket", search=s, le="0.6") == 2
    assert value("mnas_search_reward_count", search=s) == 3
    assert value("mnas_search_reward_sum", search=s) == pytest.approx(
        sum(t.reward for t in completed)
    )

    # Where the time went: five trainings (one failed, one refused), three scores, at
    # least one measurement (the other network may be measured too, or found in the
    # store), and a wait for a slot before every measurement and training.
    def phase(name: str) -> float:
        found = value("mnas_search_trial_phase_seconds_count", search=s, phase=name)
        assert found is not None, name
        return found

    assert phase("training") == 5
    assert phase("scoring") == 3
    assert 1 <= phase("measuring") <= 2
    assert phase("queued") == phase("training") + phase("measuring")
    for name in PHASES:
        seconds = value("mnas_search_trial_phase_seconds_sum", search=s, phase=name)
        assert seconds is not None and seconds >= 0


def test_samples_per_hour_is_a_sliding_window_until_the_search_ends(
    holding_last: Running,
) -> None:
    running = holding_last
    search = running.controller.submit(parse_spec(SPEC), "window")
    assert running.trainer.entered.wait(60), "the last training never started"
    rate = "mnas_search_samples_per_hour"
    # Two trials completed and the clock has not moved since the search started: the
    # rate is counted over a minute at least (not thousands per hour).
    assert running.value(rate, search=search.id) == pytest.approx(2 * 60)
    assert running.value("mnas_search_trials_done", search=search.id) == 2
    running.clock.now = SAMPLES_WINDOW_SECONDS / 2  # two in half the window
    assert running.value(rate, search=search.id) == pytest.approx(2 * 3600 / 450)
    running.clock.now = SAMPLES_WINDOW_SECONDS + 0.5  # the samples left the window
    assert running.value(rate, search=search.id) == 0
    completed = {"search": search.id, "state": "completed"}
    assert running.value("mnas_search_trials_finished_total", **completed) == 2
    running.trainer.release.set()
    final = running.controller.wait(search.id, timeout=120)
    assert final.state == common_pb2.SEARCH_STATE_SUCCEEDED, final.error
    assert running.value("mnas_search_trials_finished_total", **completed) == 3
    assert running.value(rate, search=search.id) == 0  # ended


def test_workers_and_running_trials_while_a_training_runs(holding_first: Running) -> None:
    running = holding_first
    search = running.controller.submit(parse_spec(SPEC), "busy")
    assert running.trainer.entered.wait(60), "no training started"
    value = running.value
    trainer = {"kind": "trainer", "endpoint": running.trainer_address}
    latency = {"kind": "latency", "endpoint": running.latency_address}
    assert value("mnas_search_trials_running", search=search.id) == 1
    assert value("mnas_worker_capacity", **trainer) == 2
    assert value("mnas_worker_slots_in_use", **trainer) == 1
    assert value("mnas_worker_healthy", **trainer) == 1
    assert (value("mnas_worker_capacity", **latency) or 0) >= 1
    assert value("mnas_worker_slots_in_use", **latency) == 0
    assert value("mnas_worker_healthy", **latency) == 1
    running.trainer.release.set()
    final = running.controller.wait(search.id, timeout=120)
    assert final.state == common_pb2.SEARCH_STATE_SUCCEEDED, final.error
    assert value("mnas_worker_slots_in_use", **trainer) == 0
    assert value("mnas_search_trials_running", search=search.id) == 0


def test_each_search_has_its_own_series(running: Running) -> None:
    first = running.controller.submit(parse_spec(SPEC), "first")
    running.controller.wait(first.id, timeout=120)
    second = running.controller.submit(parse_spec(SPEC.replace("max_trials: 3", "max_trials: 1")))
    running.controller.wait(second.id, timeout=120)
    value = running.value
    assert value("mnas_search_budget_trials", search=first.id) == 3
    assert value("mnas_search_budget_trials", search=second.id) == 1
    finished = "mnas_search_trials_finished_total"
    assert value(finished, search=first.id, state="completed") == 3
    assert value(finished, search=first.id, state="failed") == 1
    assert value(finished, search=second.id, state="completed") == 1
    assert value(finished, search=second.id, state="failed") == 0


def test_only_the_newest_ended_searches_keep_their_series() -> None:
    """A long-lived controller exports a bounded set: the series of ended searches beyond
    the newest ENDED_SEARCHES_KEPT are removed."""
    registry = CollectorRegistry()
    metrics = ControllerMetrics(registry)
    searches = [metrics.search(f"s{i}") for i in range(ENDED_SEARCHES_KEPT + 3)]
    for search in searches:
        search.set_budget(3, 3)
        search.finished("completed", 1.0, accuracy=0.5, reward=0.4)
    running = metrics.search("running")
    running.set_budget(3, 3)
    for search in searches:
        search.ended()

    def budget(name: str) -> float | None:
        return registry.get_sample_value("mnas_search_budget_trials", {"search": name})

    assert [budget(f"s{i}") for i in range(3)] == [None, None, None]
    assert budget("s3") == 3 and budget(f"s{ENDED_SEARCHES_KEPT + 2}") == 3
    assert budget("running") == 3
    finished = {"search": "s0", "state": "completed"}
    assert registry.get_sample_value("mnas_search_trials_finished_total", finished) is None
    assert registry.get_sample_value("mnas_search_accuracy_count", {"search": "s0"}) is None
    samples = [s for m in registry.collect() for s in m.samples if s.labels.get("search") == "s0"]
    assert samples == []


def test_a_watch_ends_with_the_finish_even_when_it_is_published_late(
    running: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The runner saves the final record before it publishes the finish: a watcher that
    polls in between still gets SEARCH_FINISHED (here the publish never comes at all)."""
    publish = SearchRunner._publish

    def without_finish(self: SearchRunner, kind: int, trial: object = None) -> None:
        if kind != controller_pb2.EVENT_KIND_SEARCH_FINISHED:
            publish(self, kind, trial)  # type: ignore[arg-type]

    monkeypatch.setattr(SearchRunner, "_publish", without_finish)
    search = running.controller.submit(parse_spec(SPEC), "late-finish")
    events = list(running.controller.watch(search.id))
    assert events[-1].kind == controller_pb2.EVENT_KIND_SEARCH_FINISHED
    assert events[-1].search.state == common_pb2.SEARCH_STATE_SUCCEEDED
    assert [e.kind for e in events].count(controller_pb2.EVENT_KIND_SEARCH_FINISHED) == 1
