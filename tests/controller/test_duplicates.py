"""The duplicate policy: a re-sampled architecture reuses its accuracy, or is retrained.

The controller is real, on loopback; its workers are in process: the latency service's
core (real LiteRT) and the reward function, and a training that answers at once and
counts its calls, since what is under test is whether the controller calls it at all.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from mnas.client import Client
from mnas.results import SearchState, TrialState
from mnas.specfile import parse_spec
from mnas.v1 import common_pb2, trainer_pb2
from services.latency.oracle import HostOracle
from services.latency.service import LatencyService, Measurement
from tests.common.local_workers import InProcessWorkers
from tests.controller.stack import local_stack

# A space of exactly one architecture: every trial samples the same network.
SPEC = """
strategy: %(strategy)s
duplicates: %(policy)s
space:
  resolution: 28
  stages: [{expansion: 1, filters: 16, layers: 1, stride: 1}]
  choices: {ops: [dconv], kernels: [3], se_ratios: [0], skips: [identity],
            filter_ratios: [1], layer_deltas: [0]}
objective: {kind: soft, target_latency_seconds: 0.001}
budget: {max_trials: 4, parallel_trials: 1}
latency: {warmup_runs: 1, runs: 2}
reference: none
"""


class CountingTraining:
    """Trains at once, counting its calls."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(
        self,
        request: trainer_pb2.TrainRequest,
        report: Callable[[common_pb2.TrainProgress], None],
        aborted: threading.Event,
    ) -> tuple[common_pb2.TrainResult, bytes | None]:
        self.calls += 1
        return common_pb2.TrainResult(accuracy=0.5 + self.calls / 100, samples_seen=1), None


class CountingLatency(LatencyService):
    """The latency service's core on this machine's CPU, counting the measurements asked."""

    def __init__(self) -> None:
        super().__init__([HostOracle()])
        self.calls = 0

    def measure(self, *args: Any, **kwargs: Any) -> Measurement:
        self.calls += 1
        return super().measure(*args, **kwargs)


@dataclass(frozen=True)
class Running:
    address: str
    trainer: CountingTraining
    latency: CountingLatency


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Running]:
    trainer, latency = CountingTraining(), CountingLatency()
    with local_stack(tmp_path, InProcessWorkers(trainer, latency=latency)) as running:
        yield Running(running.address, trainer, latency)


@pytest.mark.parametrize("strategy", ["random", "ppo"])
def test_duplicates_reuse_the_earlier_accuracy(stack: Running, strategy: str) -> None:
    address, trainer = stack.address, stack.trainer
    with Client(address) as client:
        search = client.submit(
            parse_spec(SPEC % {"strategy": strategy, "policy": "DUPLICATE_POLICY_REUSE"})
        )
        final = search.wait(timeout=120)
        trials = list(search.trials())
    assert final.state is SearchState.SUCCEEDED, final.error
    assert trainer.calls == 1
    assert len({t.architecture_id for t in trials}) == 1
    first, *rest = trials
    assert first.duplicate_of is None
    for trial in rest:
        assert trial.duplicate_of == first.number
        assert trial.proto.training == first.proto.training
        assert trial.reward == pytest.approx(first.reward, rel=0.2)  # same accuracy; latency
        assert trial.state is TrialState.COMPLETED
    # Every trial counts and reaches the strategy.
    assert final.strategy_status.observed == 4


def test_retrain_policy_trains_every_trial(
    stack: Running,
) -> None:
    address, trainer = stack.address, stack.trainer
    with Client(address) as client:
        search = client.submit(
            parse_spec(SPEC % {"strategy": "random", "policy": "DUPLICATE_POLICY_RETRAIN"})
        )
        final = search.wait(timeout=120)
        trials = list(search.trials())
    assert final.state is SearchState.SUCCEEDED, final.error
    assert trainer.calls == 4
    assert all(t.duplicate_of is None for t in trials)


def test_no_architecture_is_measured_twice_across_searches(
    stack: Running,
) -> None:
    """The store records every measurement; later trials of the same network, in this
    search or the next, take it from there without calling the latency service."""
    address = stack.address
    spec = parse_spec(SPEC % {"strategy": "random", "policy": "DUPLICATE_POLICY_RETRAIN"})
    with Client(address) as client:
        first = client.submit(spec)
        first.wait(timeout=120)
        second = client.submit(spec)
        second.wait(timeout=120)
        trials = [*first.trials(), *second.trials()]
    assert len(trials) == 8
    assert stack.latency.calls == 1
    measured, *recorded = trials
    assert measured.latency_worker != "store"
    assert all(t.latency_worker == "store" for t in recorded)
    assert all(t.proto.latency == measured.proto.latency for t in recorded)
    assert len(measured.proto.latency.samples_seconds) == 2 and measured.proto.latency.device
