"""A controller's promises at the edges of work: a submission during shutdown is refused,
never stored and left unstarted, and watchers past the cap are refused. (Cancels of work
in flight and which worker failures are retried: test_runner_conformance.py.)

A real controller on loopback, its workers in process: a training that answers at once,
and the latency service's core on an oracle that blocks until the test lets it go.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from pathlib import Path

import grpc
import pytest

from mnas.client import Client, ControllerUnavailable
from mnas.results import SearchState
from mnas.rpc import channel
from mnas.specfile import parse_spec
from mnas.v1 import controller_pb2, controller_pb2_grpc
from services.latency.service import LatencyService
from tests.common.blocked_oracle import BlockedOracle
from tests.common.local_workers import InProcessWorkers, instant_training
from tests.controller.stack import local_stack

SPEC = """
strategy: random
space:
  resolution: 28
  stages: [{expansion: 1, filters: 16, layers: 1, stride: 1}]
  choices: {ops: [dconv], kernels: [3, 5], se_ratios: [0], skips: [identity],
            filter_ratios: [1], layer_deltas: [0]}
objective: {kind: soft, target_latency_seconds: 0.001}
budget: {max_trials: 2, parallel_trials: 1}
latency: {warmup_runs: 1, runs: 2}
reference: none
"""


@pytest.fixture
def oracle() -> Iterator[BlockedOracle]:
    blocked = BlockedOracle(timeout=120)
    yield blocked
    blocked.release.set()


def test_a_submission_during_shutdown_is_unavailable_and_not_stored(tmp_path: Path) -> None:
    with local_stack(tmp_path, InProcessWorkers(instant_training)) as stack:
        stack.controller.shutdown()
        with channel(stack.address, max_attempts=2, initial_backoff=0.01) as ch:
            stub = controller_pb2_grpc.ControllerStub(ch)
            with pytest.raises(grpc.RpcError) as caught:
                stub.SubmitSearch(
                    controller_pb2.SubmitSearchRequest(spec=parse_spec(SPEC), search_id="late"),
                    timeout=10,
                )
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "shutting down" in str(caught.value.details())
        assert stack.store.list_searches() == []
        with Client(stack.address) as client, pytest.raises(ControllerUnavailable):
            client.submit(parse_spec(SPEC))


def test_watchers_past_the_cap_are_refused_and_other_calls_still_answer(
    tmp_path: Path, oracle: BlockedOracle
) -> None:
    """64 server threads: 32 watches at most, the rest kept for the other calls."""
    workers = InProcessWorkers(instant_training, latency=LatencyService([oracle]))
    with (
        local_stack(tmp_path, workers, max_workers=64) as stack,
        Client(stack.address) as client,
        channel(stack.address) as ch,
    ):
        search = client.submit(parse_spec(SPEC))  # stays running: its measurement blocks
        stub = controller_pb2_grpc.ControllerStub(ch)
        request = controller_pb2.WatchSearchRequest(search_id=search.id)
        watches = [stub.WatchSearch(request, timeout=60) for _ in range(32)]
        for watch in watches:
            assert _first(watch).kind == controller_pb2.EVENT_KIND_SNAPSHOT  # each is open
        refused = stub.WatchSearch(request, timeout=60)
        with pytest.raises(grpc.RpcError) as caught:
            _first(refused)
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "too many watchers" in str(caught.value.details())
        assert search.refresh().state is SearchState.RUNNING  # GetSearch answers
        watches.pop().cancel()  # type: ignore[no-untyped-call]  # a watcher leaves
        admitted = _retry_until_admitted(stub, request)
        assert admitted.kind == controller_pb2.EVENT_KIND_SNAPSHOT
        for watch in watches:
            watch.cancel()  # type: ignore[no-untyped-call]
        search.cancel()


def _retry_until_admitted(
    stub: controller_pb2_grpc.ControllerStub, request: controller_pb2.WatchSearchRequest
) -> controller_pb2.WatchSearchResponse:
    """The first event of a watch, asked again while the server has not yet seen the
    cancelled one end (its slot comes back when the server's callback runs)."""
    for _ in range(100):
        try:
            return _first(stub.WatchSearch(request, timeout=60))
        except grpc.RpcError as err:
            if err.code() != grpc.StatusCode.RESOURCE_EXHAUSTED:
                raise
        threading.Event().wait(0.1)  # pacing the retries of a refused call
    raise AssertionError("a freed watch slot never came back")


def _first(
    events: Iterable[controller_pb2.WatchSearchResponse],
) -> controller_pb2.WatchSearchResponse:
    for event in events:
        return event
    raise AssertionError("the watch ended without an event")
