"""PPO updates in the learner process (a real process, spawned as the controller does),
and how a search waits for a learner that falls behind."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from mnas.client import Client
from mnas.results import SearchState
from mnas.space import SearchSpace
from mnas.specfile import parse_spec
from services.controller import learner as learner_module
from services.controller import ppo as ppo_module
from services.controller.learner import (
    NICENESS,
    LearnerError,
    LearnerProcess,
    UpdateRequest,
    UpdateResult,
)
from services.controller.ppo import PPOStrategy
from services.controller.ppo_state import load_state
from services.controller.runner import MAX_BACKLOG
from services.controller.strategy import Outcome, PPOConfig, StrategyConfig
from tests.common.local_workers import InProcessWorkers, instant_training
from tests.controller.stack import local_stack

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SPACE = SearchSpace()


@pytest.fixture(scope="module")
def learner() -> Iterator[LearnerProcess]:
    process = LearnerProcess()
    process.start()
    yield process
    process.close()


def ppo(seed: int = 0) -> PPOStrategy:
    return PPOStrategy(SPACE, seed, StrategyConfig(ppo=PPOConfig(batch_size=4)))


def outcomes(strategy: PPOStrategy, first: int, count: int) -> list[Outcome]:
    result = []
    for number in range(first, first + count):
        proposal = strategy.propose()
        reward = 0.1 * (number % 3)
        result.append(Outcome(number, proposal.decisions, reward, proposal.log_probs))
    return result


def learn(strategy: PPOStrategy, batches: int, **kwargs: LearnerProcess) -> PPOStrategy:
    """Feed ``batches`` batches to ``strategy`` learning in the background; wait for each."""
    updated = threading.Semaphore(0)
    strategy.learn_in_background(updated.release, **kwargs)
    try:
        for batch in range(batches):
            for outcome in outcomes(strategy, 4 * batch, 4):
                assert strategy.observe(outcome) is False
            assert updated.acquire(timeout=120)
    finally:
        strategy.close()
    return strategy


def inline(batches: int, seed: int = 0) -> PPOStrategy:
    strategy = ppo(seed)
    for batch in range(batches):
        for outcome in outcomes(strategy, 4 * batch, 4):
            strategy.observe(outcome)
    return strategy


def same_weights(a: PPOStrategy, b: PPOStrategy) -> bool:
    return all(
        torch.equal(x, y) for x, y in zip(a.policy.parameters(), b.policy.parameters(), strict=True)
    )


def test_the_process_makes_the_inline_update(learner: LearnerProcess) -> None:
    """Same arithmetic, same thread count: the weights are bit-equal to an inline update,
    and so is the optimizer state the checkpoint keeps."""
    remote = learn(ppo(), 2, learner=learner)
    local = inline(2)
    assert remote.status() == local.status()
    assert same_weights(remote, local)
    assert remote.state() == local.state()


def test_a_dead_learner_process_is_replaced(learner: LearnerProcess) -> None:
    strategy = ppo(seed=1)
    state = strategy._saved_weights()
    request = UpdateRequest(
        sizes=strategy._sizes,
        settings=strategy.settings,
        state=state,
        batch=[(o.decisions, 0.5, o.log_probs) for o in outcomes(strategy, 0, 4)],
    )
    first = learner.update(request)
    pid = learner.pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    second = learner.update(request)  # a new process, the same answer
    assert learner.pid not in (None, pid)
    assert second == first


def test_a_stuck_learner_process_is_replaced(monkeypatch: pytest.MonkeyPatch) -> None:
    """A process that stops answering (here: stopped by a signal) is killed after the
    time limit, and the update is done by a new one."""
    monkeypatch.setattr(learner_module, "_UPDATE_SECONDS", 3.0)
    stuck = LearnerProcess()
    try:
        stuck.start()
        pid = stuck.pid
        assert pid is not None
        os.kill(pid, signal.SIGSTOP)
        strategy = ppo(seed=3)
        request = UpdateRequest(
            sizes=strategy._sizes,
            settings=strategy.settings,
            state=strategy._saved_weights(),
            batch=[(o.decisions, 0.5, o.log_probs) for o in outcomes(strategy, 0, 4)],
        )
        assert stuck.update(request).state != request.state
        assert stuck.pid not in (None, pid)
    finally:
        stuck.close()


def test_after_a_failed_start_updates_do_not_wait_for_another(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    starts: list[int] = []

    def cannot_start(self: LearnerProcess) -> object:
        starts.append(1)
        raise LearnerError("cannot start the learner process: test")

    monkeypatch.setattr(LearnerProcess, "_start", cannot_start)
    process = LearnerProcess()
    with pytest.raises(LearnerError, match="cannot start"):
        process.start()
    with pytest.raises(LearnerError, match="a moment ago"):
        process.start()
    assert starts == [1]


def test_the_learner_process_yields_to_the_controller(learner: LearnerProcess) -> None:
    assert learner.pid is not None
    mine = os.getpriority(os.PRIO_PROCESS, 0)
    assert os.getpriority(os.PRIO_PROCESS, learner.pid) == min(19, mine + NICENESS)


class _Unavailable(LearnerProcess):
    """A learner process that cannot be started."""

    def update(self, request: UpdateRequest) -> UpdateResult:
        raise LearnerError("cannot start the learner process: test")


def test_without_a_learner_process_the_update_runs_on_the_thread() -> None:
    remote = learn(ppo(), 2, learner=_Unavailable())
    local = inline(2)
    assert remote.status() == local.status()
    assert same_weights(remote, local)


def test_an_update_that_raises_drops_its_batch_and_the_search_goes_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Neither the process nor the thread can update: the batch is dropped, the callback
    is not called, and ``learning()`` ends (a search waiting for it is not stuck)."""

    def broken(*args: object) -> float:
        raise RuntimeError("broken update")

    monkeypatch.setattr(ppo_module, "run_epochs", broken)
    strategy = ppo()
    called: list[int] = []
    strategy.learn_in_background(lambda: called.append(1), learner=_Unavailable())
    try:
        for outcome in outcomes(strategy, 0, 4):
            strategy.observe(outcome)
        with strategy._lock:
            while strategy.learning():
                strategy._wake.wait(60)
        assert called == []
        assert strategy.status().updates == 0
    finally:
        strategy.close()


def test_weights_of_another_policy_are_refused() -> None:
    small = PPOStrategy(SPACE, 0, StrategyConfig(ppo=PPOConfig(hidden_size=16)))
    with pytest.raises(ValueError, match="weights"):
        load_state(small._saved_weights(), ppo().policy, ppo().optimizer)
    with pytest.raises(ValueError, match="weights"):
        load_state(b"not weights", ppo().policy, ppo().optimizer)


def test_a_failing_callback_does_not_stop_the_learner(learner: LearnerProcess) -> None:
    """The callback writes the checkpoint; a store that fails once must not end learning."""
    strategy = ppo(seed=2)
    calls: list[int] = []
    second = threading.Event()

    def on_update() -> None:
        calls.append(strategy.status().updates)
        if len(calls) == 1:
            raise RuntimeError("store unavailable")
        second.set()

    strategy.learn_in_background(on_update, learner=learner)
    try:
        for outcome in outcomes(strategy, 0, 8):
            strategy.observe(outcome)
        assert second.wait(120)
        assert calls == [1, 2]
    finally:
        strategy.close()


class _Held(LearnerProcess):
    """A learner process that answers nothing until released, then cannot update (the
    strategy's thread does it instead)."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()

    def update(self, request: UpdateRequest) -> UpdateResult:
        self.release.wait(120)
        raise LearnerError("released")


BACKLOG_SPEC = """
strategy: ppo
ppo: {batch_size: 2, hidden_size: 16}
space:
  resolution: 28
  stages: [{expansion: 1, filters: 16, layers: 1, stride: 1}]
  choices: {ops: [dconv], kernels: [3, 5], se_ratios: [0], skips: [identity],
            filter_ratios: [0.5, 1], layer_deltas: [0]}
objective: {kind: soft, target_latency_seconds: 0.001}
budget: {max_trials: 12, parallel_trials: 1}
latency: {warmup_runs: 1, runs: 2}
duplicates: DUPLICATE_POLICY_RETRAIN
"""


def test_trials_wait_for_a_learner_that_falls_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the learner held, trials go on until MAX_BACKLOG batches wait besides the one
    it is learning, then wait; released, the search completes. The controller is real, on
    in-process workers whose training answers at once."""
    held = _Held()
    monkeypatch.setattr(ppo_module, "shared_learner", lambda: held)
    limit = 2 * (MAX_BACKLOG + 1)  # trials whose batches fill the backlog
    with (
        local_stack(tmp_path, InProcessWorkers(instant_training)) as stack,
        Client(stack.address) as client,
    ):
        search = client.submit(parse_spec(BACKLOG_SPEC))
        try:
            for event in search.watch(timeout=120):
                if event.search.trials_completed == limit:
                    # The next trial would have been recorded before this event was sent.
                    break
            assert stack.store.count_trials(search.id) == limit
        finally:
            held.release.set()
        final = search.wait(timeout=120)
    assert final.state is SearchState.SUCCEEDED, final.error
    assert final.trials_completed == 12
    assert final.strategy_status.updates == 6
