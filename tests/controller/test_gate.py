"""The work gate: how many trial threads run the controller's own work at once.

The unit tests use real threads; the search test runs a real controller on in-process
workers (the latency service's core, the reward function, a training that answers at
once), so what is under test is that a gate of one slot bounds the controller's work
without ever deadlocking it.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from mnas.v1 import common_pb2
from services.controller.gate import WorkGate
from tests.common.local_workers import InProcessWorkers, instant_training
from tests.common.tiny_spec import tiny_spec
from tests.controller.stack import local_stack

WAIT = 30.0  # seconds: only ever reached when a test is about to fail


def test_no_more_threads_than_slots_hold_the_gate() -> None:
    gate = WorkGate(2)
    inside = most = 0
    count = threading.Lock()
    start = threading.Barrier(8)

    def work() -> None:
        nonlocal inside, most
        start.wait()
        for _ in range(300):
            with gate.held():
                with count:
                    inside += 1
                    most = max(most, inside)
                with count:
                    inside -= 1

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert 1 <= most <= 2
    assert gate.in_use() == 0


def test_released_hands_the_slot_to_a_waiting_thread() -> None:
    gate = WorkGate(1)
    other_in = threading.Event()

    def other() -> None:
        with gate.held():
            other_in.set()

    with gate.held():
        thread = threading.Thread(target=other)
        thread.start()
        with gate.released():  # as a trial thread waiting on a worker
            assert other_in.wait(WAIT), "the slot was not given up"
            thread.join(WAIT)
        assert gate.holding()
        assert gate.in_use() == 1
    assert gate.in_use() == 0


def test_released_without_a_slot_gives_nothing_up() -> None:
    gate = WorkGate(1)
    holder_in, leave = threading.Event(), threading.Event()

    def holder() -> None:
        with gate.held():
            holder_in.set()
            leave.wait(WAIT)

    thread = threading.Thread(target=holder)
    thread.start()
    assert holder_in.wait(WAIT)
    with gate.released():  # an API call's thread: it holds no slot
        assert gate.in_use() == 1
    assert gate.in_use() == 1
    assert not gate.holding()
    leave.set()
    thread.join(WAIT)
    assert gate.in_use() == 0


def test_a_thread_cannot_hold_two_slots() -> None:
    gate = WorkGate(2)
    with gate.held(), pytest.raises(RuntimeError, match="holds a slot already"), gate.held():
        pass


def test_a_gate_needs_a_slot() -> None:
    with pytest.raises(ValueError, match="slots: must be >= 1, got 0"):
        WorkGate(0)


def test_searches_end_with_one_slot_and_one_trainer_slot(tmp_path: Path) -> None:
    """Eight trials in flight over two searches wait for one trainer slot and one gate
    slot: a trial thread must give its gate slot up while it waits for a worker's, or
    the one that holds the worker waits for the gate forever."""
    with local_stack(tmp_path, InProcessWorkers(instant_training), work_slots=1) as stack:
        core = stack.controller
        ids = [
            core.submit(tiny_spec(f"gated-{i}", seed=i, trials=6, parallel=4)).id for i in range(2)
        ]
        finals = [core.wait(search_id, timeout=120) for search_id in ids]
    for final in finals:
        assert final.state == common_pb2.SEARCH_STATE_SUCCEEDED, final.error
        assert final.trials_completed == 6
