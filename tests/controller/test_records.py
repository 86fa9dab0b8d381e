"""What the store holds while trials run: a controller killed at any moment is resumed from
it, so every trial must be recorded as running before any worker sees it.

The controller, the latency service (real LiteRT) and the reward service are real, on
loopback; the trainer is a real gRPC server that reads the controller's store (SQLite) each
time it is called.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from mnas.client import Client
from mnas.results import SearchState
from mnas.specfile import parse_spec
from mnas.v1 import common_pb2, trainer_pb2
from services.controller.store import Store
from tests.common.fake_trainer import FakeTrainer
from tests.controller.stack import controller_stack

SPEC = """
strategy: %(strategy)s
duplicates: DUPLICATE_POLICY_RETRAIN
space:
  resolution: 28
  stages: [{expansion: 1, filters: 16, layers: 1, stride: 1}]
  choices: {ops: [dconv, mbconv3], kernels: [3, 5], se_ratios: [0], skips: [identity],
            filter_ratios: [1], layer_deltas: [0]}
objective: {kind: soft, target_latency_seconds: 0.001}
budget: {max_trials: 5, parallel_trials: 1}
latency: {warmup_runs: 1, runs: 2}
reference: none
"""


class StoreReadingTrainer(FakeTrainer):
    """Notes, at each call, the trials the store holds as running."""

    def __init__(self) -> None:
        self.store: Store | None = None
        self.seen: list[tuple[str, list[str]]] = []  # (the request's network, running ones)

    def Train(
        self, request: trainer_pb2.TrainRequest, context: grpc.ServicerContext
    ) -> Iterator[trainer_pb2.TrainResponse]:
        assert self.store is not None
        (search,) = self.store.list_searches()
        running = self.store.list_trials(search.id, states=[common_pb2.TRIAL_STATE_RUNNING])
        self.seen.append(
            (request.architecture.canonical, [t.architecture.canonical for t in running])
        )
        yield trainer_pb2.TrainResponse(
            result=common_pb2.TrainResult(accuracy=0.5 + len(self.seen) / 100, samples_seen=1)
        )

    def GetCapacity(
        self, request: common_pb2.GetCapacityRequest, context: grpc.ServicerContext
    ) -> common_pb2.GetCapacityResponse:
        return common_pb2.GetCapacityResponse(max_concurrent=1, hardware="store-reading")


@pytest.mark.parametrize("strategy", ["random", "ppo"])
def test_every_trial_is_recorded_running_before_its_trainer_is_called(
    tmp_path: Path, strategy: str
) -> None:
    # The first trial starts on the scheduler's thread, the next ones on the thread of the
    # trial before, whose end is written in the same transaction.
    trainer = StoreReadingTrainer()
    with controller_stack(tmp_path, trainer) as running:
        trainer.store = running.store
        with Client(running.address) as client:
            search = client.submit(parse_spec(SPEC % {"strategy": strategy}))
            final = search.wait(timeout=120)
    assert final.state is SearchState.SUCCEEDED, final.error
    assert len(trainer.seen) == 5
    for network, recorded in trainer.seen:
        assert recorded == [network]
