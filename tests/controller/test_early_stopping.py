"""Early stopping with the median rule, and keeping the weights of the best trials.

The rule itself is tested on its own. In the search tests the controller is real, on
loopback; its workers are in process: the latency service's core (real LiteRT), the
reward function, and a training that reports intermediate accuracies scripted per
architecture (and weights), since what is under test is what the controller does with
them: real intermediate evaluations are tested in tests/trainer/test_training.py.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from mnas.arch import decode
from mnas.client import Client, MnasError
from mnas.results import SearchState, TrialState
from mnas.specfile import parse_spec
from mnas.v1 import common_pb2, trainer_pb2
from services.controller.stopping import MedianStopping
from services.controller.store import Store
from services.trainer.training import TrainingCancelled
from tests.common.local_workers import InProcessWorkers
from tests.controller.stack import local_stack

TOTAL_STEPS = 40
EVERY = 10
# Two architectures: the 16-filter one learns, the 8-filter one (deliberately bad) does not.
SPEC = """
strategy: random
seed: 3
space:
  resolution: 28
  stages: [{expansion: 1, filters: 16, layers: 1, stride: 1}]
  choices: {ops: [dconv], kernels: [3], se_ratios: [0], skips: [identity],
            filter_ratios: [0.5, 1], layer_deltas: [0]}
objective: {kind: soft, target_latency_seconds: 0.001}
budget: {max_trials: 12, parallel_trials: 1, keep_weights: 2}
training: {steps: 40, evaluate_every_steps: 10}
early_stopping: {rule: EARLY_STOPPING_RULE_MEDIAN, min_trials: 2}
latency: {warmup_runs: 1, runs: 2}
duplicates: DUPLICATE_POLICY_RETRAIN
reference: none
"""


def curve(canonical: str) -> list[float]:
    """Accuracy at steps 10, 20, 30 and the end: the bad network stays near chance."""
    filters = decode(canonical).blocks[0].output_filters
    return [0.12, 0.14, 0.15, 0.16] if filters < 16 else [0.5, 0.6, 0.7, 0.8]


class ScriptedTraining:
    """Reports progress with the scripted accuracies, then the result (and weights)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.calls = 0

    def __call__(
        self,
        request: trainer_pb2.TrainRequest,
        report: Callable[[common_pb2.TrainProgress], None],
        aborted: threading.Event,
    ) -> tuple[common_pb2.TrainResult, bytes | None]:
        with self.lock:
            self.calls += 1
        accuracies = curve(request.architecture.canonical)
        for i, step in enumerate(range(EVERY, TOTAL_STEPS, EVERY)):
            if aborted.is_set():
                raise TrainingCancelled("training cancelled")
            report(
                common_pb2.TrainProgress(
                    step=step, total_steps=TOTAL_STEPS, accuracy=accuracies[i], samples_seen=step
                )
            )
        result = common_pb2.TrainResult(accuracy=accuracies[-1], samples_seen=TOTAL_STEPS)
        return result, request.architecture.canonical.encode()


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[tuple[str, ScriptedTraining, Store]]:
    trainer = ScriptedTraining()
    with local_stack(tmp_path, InProcessWorkers(trainer)) as running:
        yield running.address, trainer, running.store


def test_median_rule_needs_min_trials_and_compares_the_best_so_far() -> None:
    rule = MedianStopping(min_trials=3, start_step=10)
    rule.add_completed(0, [(10, 0.5), (20, 0.6)])
    rule.add_completed(1, [(10, 0.7), (20, 0.8)])
    assert rule.median_at(10) is None
    assert not rule.should_stop(10, 0.0)  # two completed trials are not enough
    rule.add_completed(2, [(10, 0.6)])
    assert rule.median_at(10) == pytest.approx(0.6)
    assert rule.should_stop(10, 0.59)
    assert not rule.should_stop(10, 0.6)  # at the median: goes on
    assert not rule.should_stop(5, 0.0)  # before start_step
    assert not rule.should_stop(20, 0.0)  # only two trials reported step 20


def test_a_bad_architecture_stops_before_its_budget(
    stack: tuple[str, ScriptedTraining, Store],
) -> None:
    address, trainer, _ = stack
    with Client(address) as client:
        search = client.submit(parse_spec(SPEC))
        final = search.wait(timeout=120)
        trials = list(search.trials())
    assert final.state is SearchState.SUCCEEDED, final.error
    stopped = [t for t in trials if t.state is TrialState.STOPPED]
    completed = [t for t in trials if t.state is TrialState.COMPLETED]
    assert stopped, "the seed samples the bad network after two good ones"
    assert final.trials_stopped == len(stopped)
    assert final.trials_completed == len(completed)
    assert final.trials_failed == 0
    assert len(stopped) + len(completed) == 12  # stopped trials count towards the budget
    assert trainer.calls == 12  # a stopped trial is not retried
    for trial in stopped:
        assert curve(trial.architecture)[0] < 0.5  # only the bad network stops
        assert trial.stopped_at_step == EVERY < trial.total_steps == TOTAL_STEPS
        assert [(e.step, e.accuracy) for e in trial.proto.evaluations] == [(EVERY, 0.12)]
        assert trial.accuracy == pytest.approx(0.12)
        assert trial.reward is not None and trial.reward > 0  # with the accuracy it reached
    for trial in completed:
        assert [e.step for e in trial.proto.evaluations] == [10, 20, 30]
    # The strategy learns from stopped trials too.
    assert final.strategy_status.observed == 12
    assert final.best_trial in {t.number for t in completed}


def test_the_best_trials_weights_are_kept(stack: tuple[str, ScriptedTraining, Store]) -> None:
    address, _, store = stack
    with Client(address) as client:
        search = client.submit(parse_spec(SPEC))
        final = search.wait(timeout=120)
        trials = list(search.trials())
        best = sorted(
            (t for t in trials if t.state is TrialState.COMPLETED),
            key=lambda t: (-(t.reward or 0.0), t.number),
        )[:2]
        kept = {t.number for t in trials if t.has_weights}
        assert kept == {t.number for t in best}
        for trial in best:
            assert search.weights(trial.number) == trial.architecture.encode()
        others = [t for t in trials if t.number not in kept]
        with pytest.raises(MnasError, match="no weights kept"):
            search.weights(others[0].number)
    assert final.state is SearchState.SUCCEEDED
    for trial in trials:
        assert (store.load_weights(final.id, trial.number) is not None) == trial.has_weights
