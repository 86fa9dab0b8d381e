"""The worker pool: capacity, preference, benching failed endpoints, DNS targets."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

import pytest

from services.controller.workers import NoWorkers, WorkerPool, resolve_targets


def pool(capacities: dict[str, int], down: set[str] | None = None) -> WorkerPool:
    down = down if down is not None else set()

    def probe(address: str) -> int:
        if address in down:
            raise ConnectionError("refused")
        return capacities[address]

    return WorkerPool("trainer", list(capacities), probe, backoff_seconds=0.0)


def test_never_hands_out_more_than_the_capacity() -> None:
    p = pool({"a:1": 2, "b:1": 1})
    taken = [p.acquire() for _ in range(3)]
    assert sorted(taken) == ["a:1", "a:1", "b:1"]
    stop = threading.Event()
    stop.set()
    with pytest.raises(NoWorkers):
        p.acquire(cancelled=stop.is_set, poll_seconds=0.01)
    p.release("b:1")
    assert p.acquire() == "b:1"


def test_avoids_endpoints_that_failed_this_trial_when_others_are_free() -> None:
    p = pool({"a:1": 1, "b:1": 1})
    assert p.acquire(avoid={"a:1"}) == "b:1"
    # Only the avoided one is free: take it rather than wait.
    assert p.acquire(avoid={"a:1"}) == "a:1"


def test_failed_endpoint_is_benched_until_it_answers_a_probe() -> None:
    down: set[str] = set()
    p = pool({"a:1": 1, "b:1": 1}, down)
    first = p.acquire()
    down.add(first)
    p.release(first, failed=True)
    other = p.acquire()
    assert other != first
    p.release(other)
    down.clear()
    assert {p.acquire(), p.acquire()} == {"a:1", "b:1"}


def test_an_endpoint_that_refused_a_job_takes_none_for_a_pause(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A trainer that said "no free slot" (a cancelled job not given back yet) is not
    asked again at once, nor benched: after the pause it takes jobs again."""
    now = [100.0]
    monkeypatch.setattr(time, "monotonic", lambda: now[0])
    p = WorkerPool("trainer", ["a:1", "b:1"], lambda address: 1, busy_seconds=1.0)
    assert p.acquire(avoid={"b:1"}) == "a:1"
    p.release("a:1", busy=True)
    assert p.acquire() == "b:1"  # a:1 pauses, b:1 is free
    stop = threading.Event()
    stop.set()
    with pytest.raises(NoWorkers):  # a:1 still pausing, b:1 taken
        p.acquire(cancelled=stop.is_set, poll_seconds=0.0)
    now[0] += 1.0
    assert p.acquire() == "a:1"  # not benched: no probe needed
    assert p.capacity() == 2


def test_unreachable_endpoints_are_not_used() -> None:
    p = pool({"a:1": 1, "b:1": 1}, down={"a:1"})
    assert p.acquire() == "b:1"
    assert p.capacity() == 1


def test_dns_targets_expand_to_one_address_per_record() -> None:
    assert resolve_targets(["dns:///localhost:5000", "10.0.0.1:7"])[-1] == "10.0.0.1:7"
    expanded = resolve_targets(["dns:///localhost:5000"])
    assert expanded and all(a.endswith(":5000") for a in expanded)
    with pytest.raises(ValueError, match="dns:///NAME:PORT"):
        resolve_targets(["dns:///nope"])


def test_scaling_a_headless_service_adds_and_drops_endpoints() -> None:
    """``kubectl scale`` on the trainers' Deployment changes the A records of their
    headless Service; a refresh picks up new pods and drops gone ones once idle (here the
    records come from a table instead of DNS)."""
    records = {"dns:///mnas-trainer:50051": ["10.0.0.1:50051"]}

    def resolve(targets: Sequence[str]) -> list[str]:
        return [address for target in targets for address in records[target]]

    p = WorkerPool(
        "trainer", list(records), lambda address: 2, resolve=resolve, backoff_seconds=0.0
    )
    assert p.acquire() == "10.0.0.1:50051"
    records["dns:///mnas-trainer:50051"] = ["10.0.0.2:50051", "10.0.0.3:50051"]  # scaled
    p.refresh(force=True)
    taken = [p.acquire() for _ in range(4)]
    assert sorted(taken) == ["10.0.0.2:50051"] * 2 + ["10.0.0.3:50051"] * 2  # none on the gone pod
    # The gone pod's job is still being accounted for; it is dropped once released.
    assert "10.0.0.1:50051" in {e.address for e in p.snapshot()}
    p.release("10.0.0.1:50051", failed=True)  # its trial failed: retried on another pod
    p.refresh(force=True)
    assert {e.address for e in p.snapshot()} == {"10.0.0.2:50051", "10.0.0.3:50051"}
    assert p.capacity() == 4


def test_a_failed_lookup_keeps_the_endpoints_and_a_gone_one_can_come_back() -> None:
    """DNS answering nothing for a moment does not empty the pool; a pod removed and then
    listed again is probed and used anew."""
    records: dict[str, list[str]] = {"dns:///t:1": ["10.0.0.1:1", "10.0.0.2:1"]}

    def resolve(targets: Sequence[str]) -> list[str]:
        return [address for target in targets for address in records[target]]

    p = WorkerPool("trainer", list(records), lambda address: 1, resolve=resolve)
    first = p.acquire()
    records["dns:///t:1"] = []  # the lookup failed
    p.refresh(force=True)
    assert p.capacity() == 2
    records["dns:///t:1"] = [a for a in ("10.0.0.1:1", "10.0.0.2:1") if a != first]
    p.refresh(force=True)  # `first` is gone but busy: no new jobs on it
    assert p.capacity() == 1
    records["dns:///t:1"] = ["10.0.0.1:1", "10.0.0.2:1"]  # back
    p.refresh(force=True)
    assert p.capacity() == 2
    p.release(first)
    assert sorted([p.acquire(), p.acquire()]) == ["10.0.0.1:1", "10.0.0.2:1"]
