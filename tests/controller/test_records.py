"""What the store holds while trials run: a controller killed at any moment is resumed from
it, so every trial must be recorded as running before any worker sees it.

The controller is real, on loopback; its workers are in process: the latency service's
core (real LiteRT), the reward function, and a training that reads the controller's store
(SQLite) each time it is called.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from mnas.client import Client
from mnas.results import SearchState
from mnas.specfile import parse_spec
from mnas.v1 import common_pb2, trainer_pb2
from services.controller.store import Store
from tests.common.local_workers import InProcessWorkers
from tests.controller.stack import local_stack

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


class StoreReadingTraining:
    """Notes, at each call, the trials the store holds as running."""

    def __init__(self) -> None:
        self.store: Store | None = None
        self.seen: list[tuple[str, list[str]]] = []  # (the request's network, running ones)

    def __call__(
        self,
        request: trainer_pb2.TrainRequest,
        report: Callable[[common_pb2.TrainProgress], None],
        aborted: threading.Event,
    ) -> tuple[common_pb2.TrainResult, bytes | None]:
        assert self.store is not None
        (search,) = self.store.list_searches()
        running = self.store.list_trials(search.id, states=[common_pb2.TRIAL_STATE_RUNNING])
        self.seen.append(
            (request.architecture.canonical, [t.architecture.canonical for t in running])
        )
        return common_pb2.TrainResult(accuracy=0.5 + len(self.seen) / 100, samples_seen=1), None


@pytest.mark.parametrize("strategy", ["random", "ppo"])
def test_every_trial_is_recorded_running_before_its_trainer_is_called(
    tmp_path: Path, strategy: str
) -> None:
    # The first trial starts on the scheduler's thread, the next ones on the thread of the
    # trial before, whose end is written in the same transaction.
    trainer = StoreReadingTraining()
    with local_stack(tmp_path, InProcessWorkers(trainer)) as running:
        trainer.store = running.store
        with Client(running.address) as client:
            search = client.submit(parse_spec(SPEC % {"strategy": strategy}))
            final = search.wait(timeout=120)
    assert final.state is SearchState.SUCCEEDED, final.error
    assert len(trainer.seen) == 5
    for network, recorded in trainer.seen:
        assert recorded == [network]
