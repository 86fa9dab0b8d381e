"""The duplicate policy: a re-sampled architecture reuses its accuracy, or is retrained.

The controller, the latency service (real LiteRT) and the reward service are real, on
loopback; the trainer is a real gRPC server whose Train answers at once and counts its
calls, since what is under test is whether the controller calls it at all.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from prometheus_client import CollectorRegistry

from mnas.client import Client
from mnas.results import SearchState, TrialState
from mnas.specfile import parse_spec
from mnas.v1 import common_pb2, trainer_pb2
from tests.common.fake_trainer import FakeTrainer
from tests.controller.stack import controller_stack

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


class CountingTrainer(FakeTrainer):
    def __init__(self) -> None:
        self.calls = 0

    def Train(
        self, request: trainer_pb2.TrainRequest, context: grpc.ServicerContext
    ) -> Iterator[trainer_pb2.TrainResponse]:
        self.calls += 1
        yield trainer_pb2.TrainResponse(
            result=common_pb2.TrainResult(accuracy=0.5 + self.calls / 100, samples_seen=1)
        )

    def GetCapacity(
        self, request: common_pb2.GetCapacityRequest, context: grpc.ServicerContext
    ) -> common_pb2.GetCapacityResponse:
        return common_pb2.GetCapacityResponse(max_concurrent=1, hardware="counting")


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[tuple[str, CountingTrainer, CollectorRegistry]]:
    trainer = CountingTrainer()
    with controller_stack(tmp_path, trainer) as running:
        yield running.address, trainer, running.latency_registry


@pytest.mark.parametrize("strategy", ["random", "ppo"])
def test_duplicates_reuse_the_earlier_accuracy(
    stack: tuple[str, CountingTrainer, CollectorRegistry], strategy: str
) -> None:
    address, trainer, _ = stack
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
    stack: tuple[str, CountingTrainer, CollectorRegistry],
) -> None:
    address, trainer, _ = stack
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
    stack: tuple[str, CountingTrainer, CollectorRegistry],
) -> None:
    """The store records every measurement; later trials of the same network, in this
    search or the next, take it from there without calling the latency service."""
    address, _, latency = stack
    spec = parse_spec(SPEC % {"strategy": "random", "policy": "DUPLICATE_POLICY_RETRAIN"})
    with Client(address) as client:
        first = client.submit(spec)
        first.wait(timeout=120)
        second = client.submit(spec)
        second.wait(timeout=120)
        trials = [*first.trials(), *second.trials()]
    assert len(trials) == 8
    calls = sum(
        latency.get_sample_value(
            "mnas_latency_measurements_total", {"device_class": "host-cpu", "cached": cached}
        )
        or 0.0
        for cached in ("true", "false")
    )
    assert calls == 1
    measured, *recorded = trials
    assert measured.latency_worker != "store"
    assert all(t.latency_worker == "store" for t in recorded)
    assert all(t.proto.latency == measured.proto.latency for t in recorded)
    assert len(measured.proto.latency.samples_seconds) == 2 and measured.proto.latency.device
