"""Who may search: a controller started with users checks every call's bearer token, and a
user reads and cancels only their own searches. A real controller on loopback, its workers
in process (a training that ends when the test lets it, :class:`GatedTraining`); the
mutual-TLS test calls real worker servers, since TLS to the workers is its subject."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import grpc
import pytest

from mnas.client import Client, ControllerUnavailable, SearchNotFound, Unauthenticated
from mnas.results import SearchState
from mnas.rpc import channel
from mnas.specfile import parse_spec
from mnas.v1 import common_pb2, controller_pb2, controller_pb2_grpc, trainer_pb2
from services.controller.users import User, Users
from tests.common.certs import make_pki
from tests.common.fake_trainer import ServedTraining
from tests.common.grpc_helpers import health_status, reflected_services
from tests.common.local_workers import InProcessWorkers, instant_training
from tests.controller.stack import Stack, controller_stack, local_stack

SPEC = """
strategy: random
space:
  resolution: 28
  stages: [{expansion: 1, filters: 16, layers: 1, stride: 1}]
  choices: {ops: [dconv, mbconv3], kernels: [3, 5], se_ratios: [0], skips: [identity],
            filter_ratios: [1], layer_deltas: [0]}
objective: {kind: soft, target_latency_seconds: 0.001}
budget: {max_trials: %(trials)d, parallel_trials: 1}
latency: {warmup_runs: 1, runs: 2}
reference: none
"""

ALICE = "alice-token-0123456789abcdef"
BOB = "bob-token-0123456789abcdef0"
ADMIN = "ops-token-0123456789abcdef00"
USERS = Users([(ALICE, User("alice")), (BOB, User("bob")), (ADMIN, User("ops", admin=True))])


class GatedTraining:
    """Trains each trial until ``open`` is set (then reports 0.5), or until the call is
    aborted."""

    def __init__(self) -> None:
        self.open = threading.Event()
        self.started = threading.Event()

    def __call__(
        self,
        request: trainer_pb2.TrainRequest,
        report: Callable[[common_pb2.TrainProgress], None],
        aborted: threading.Event,
    ) -> tuple[common_pb2.TrainResult, bytes | None]:
        self.started.set()
        while not self.open.wait(timeout=0.1):  # polls whether the call was aborted
            if aborted.is_set():
                break
        return common_pb2.TrainResult(accuracy=0.5, samples_seen=1), None


@pytest.fixture
def trainer() -> GatedTraining:
    return GatedTraining()


@pytest.fixture
def stack(tmp_path: Path, trainer: GatedTraining) -> Iterator[Stack]:
    with local_stack(tmp_path, InProcessWorkers(trainer), users=USERS) as running:
        yield running
        trainer.open.set()


def _client(stack: Stack, token: str | None) -> Client:
    return Client(stack.address, token=token, timeout=30)


def _spec(trials: int = 1) -> common_pb2.SearchSpec:
    return parse_spec(SPEC % {"trials": trials})


# --- refused without a known token -----------------------------------------------------

_CALLS: dict[str, Callable[[controller_pb2_grpc.ControllerStub], Any]] = {
    "SubmitSearch": lambda s: s.SubmitSearch(
        controller_pb2.SubmitSearchRequest(spec=_spec()), timeout=10
    ),
    "GetSearch": lambda s: s.GetSearch(controller_pb2.GetSearchRequest(search_id="x"), timeout=10),
    "ListSearches": lambda s: s.ListSearches(controller_pb2.ListSearchesRequest(), timeout=10),
    "WatchSearch": lambda s: list(
        s.WatchSearch(controller_pb2.WatchSearchRequest(search_id="x"), timeout=10)
    ),
    "ListTrials": lambda s: s.ListTrials(
        controller_pb2.ListTrialsRequest(search_id="x"), timeout=10
    ),
    "CancelSearch": lambda s: s.CancelSearch(
        controller_pb2.CancelSearchRequest(search_id="x"), timeout=10
    ),
    "GetWeights": lambda s: list(
        s.GetWeights(controller_pb2.GetWeightsRequest(search_id="x", trial=0), timeout=10)
    ),
}


def test_every_controller_method_is_guarded() -> None:
    names = {m.name for m in controller_pb2.DESCRIPTOR.services_by_name["Controller"].methods}
    assert names == set(_CALLS)


@pytest.mark.parametrize("method", sorted(_CALLS))
@pytest.mark.parametrize(
    "metadata",
    [
        None,
        [("authorization", "Bearer not-a-known-token-at-all")],
        [("authorization", ALICE)],  # the token without its scheme
        [("authorization", f"Basic {ALICE}")],
    ],
    ids=["none", "unknown", "no-scheme", "basic"],
)
def test_a_call_without_a_known_bearer_token_is_unauthenticated(
    stack: Stack, method: str, metadata: list[tuple[str, str]] | None
) -> None:
    with channel(stack.address) as ch:
        stub = controller_pb2_grpc.ControllerStub(ch)
        with pytest.raises(grpc.RpcError) as caught:
            _CALLS[method](cast(Any, _WithMetadata(stub, metadata)))
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    details = str(caught.value.details())
    assert "Bearer" in details
    for token in (ALICE, "not-a-known-token-at-all"):
        assert token not in details
    with _client(stack, ALICE) as client:
        assert client.searches() == []  # nothing was submitted


class _WithMetadata:
    """A stub whose every call carries ``metadata``."""

    def __init__(self, stub: controller_pb2_grpc.ControllerStub, metadata: Any) -> None:
        self._stub, self._metadata = stub, metadata

    def __getattr__(self, name: str) -> Callable[..., Any]:
        method = getattr(self._stub, name)
        return lambda request, **kw: method(request, metadata=self._metadata, **kw)


def test_the_sdk_raises_unauthenticated(stack: Stack) -> None:
    with _client(stack, "wrong-token-0123456789abcdef") as client, pytest.raises(Unauthenticated):
        client.searches()


def test_health_and_reflection_stay_open(stack: Stack) -> None:
    assert health_status(stack.address, "mnas.v1.Controller") == "SERVING"
    assert "mnas.v1.Controller" in reflected_services(stack.address)


# --- a user's own searches ---------------------------------------------------------------


def test_a_search_is_its_submitters_and_hidden_from_other_users(
    stack: Stack, trainer: GatedTraining
) -> None:
    with _client(stack, ALICE) as alice, _client(stack, BOB) as bob:
        search = alice.submit(_spec())
        assert search.info.owner == "alice"
        assert trainer.started.wait(timeout=60)
        # Bob's answers for Alice's search are those for an id that does not exist.
        attempts: list[Callable[[], object]] = [
            lambda: bob.search(search.id),
            lambda: bob.search("no-such-search"),
        ]
        for attempt in attempts:
            with pytest.raises(SearchNotFound) as caught:
                attempt()
            assert "no search" in str(caught.value)
        with pytest.raises(SearchNotFound):
            _raw(stack, BOB, "CancelSearch", search.id)
        for method in ("ListTrials", "WatchSearch", "GetWeights"):
            with pytest.raises(grpc.RpcError) as raw:
                _raw(stack, BOB, method, search.id)
            assert raw.value.code() == grpc.StatusCode.NOT_FOUND
        assert bob.searches() == []
        assert [s.id for s in alice.searches()] == [search.id]
        # Bob's cancel touched nothing.
        assert alice.search(search.id).state is SearchState.RUNNING
        cancelled = alice.search(search.id).cancel()
        assert cancelled.state is SearchState.CANCELLED


def _raw(stack: Stack, token: str, method: str, search_id: str) -> Any:
    """A Controller call for ``search_id`` as the holder of ``token``."""
    requests = {
        "CancelSearch": controller_pb2.CancelSearchRequest(search_id=search_id),
        "ListTrials": controller_pb2.ListTrialsRequest(search_id=search_id),
        "WatchSearch": controller_pb2.WatchSearchRequest(search_id=search_id),
        "GetWeights": controller_pb2.GetWeightsRequest(search_id=search_id, trial=0),
    }
    with channel(stack.address, token=token) as ch:
        stub = controller_pb2_grpc.ControllerStub(ch)
        try:
            answer = getattr(stub, method)(requests[method], timeout=10)
            return list(answer) if method in ("WatchSearch", "GetWeights") else answer
        except grpc.RpcError as err:
            if method == "CancelSearch" and err.code() == grpc.StatusCode.NOT_FOUND:
                raise SearchNotFound(err.details()) from None
            raise


def test_an_admin_sees_and_cancels_every_search(stack: Stack, trainer: GatedTraining) -> None:
    with _client(stack, ALICE) as alice, _client(stack, BOB) as bob, _client(stack, ADMIN) as ops:
        first = alice.submit(_spec())
        second = bob.submit(_spec())
        assert {s.id: s.owner for s in ops.searches()} == {first.id: "alice", second.id: "bob"}
        assert ops.search(second.id).info.owner == "bob"
        assert ops.search(first.id).cancel().state is SearchState.CANCELLED
        assert ops.search(second.id).cancel().state is SearchState.CANCELLED


def test_tokens_stay_out_of_the_logs(stack: Stack, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    with _client(stack, ALICE) as alice:
        search = alice.submit(_spec())
        search.cancel()
    with (
        _client(stack, "a-wrong-token-that-must-not-show") as wrong,
        pytest.raises(Unauthenticated) as caught,
    ):
        wrong.searches()
    assert "a-wrong-token" not in str(caught.value)
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "submitted" in text  # the controller did log the submission
    for token in (ALICE, "a-wrong-token-that-must-not-show"):
        assert token not in text
    assert ALICE not in repr(Client(stack.address, token=ALICE)._channel)


# --- the whole trial path over mutual TLS -----------------------------------------------


def test_a_search_runs_with_every_service_on_mutual_tls_and_a_token(tmp_path: Path) -> None:
    """The controller calls the trainer, latency and reward services with its client
    certificate; the client calls the controller with its own and a token."""
    pki = make_pki()
    trainer = ServedTraining(instant_training)
    with controller_stack(tmp_path, trainer, pki=pki, users=USERS) as running:
        with Client(running.address, tls=pki.client(), token=ALICE, timeout=30) as client:
            final = client.submit(_spec(trials=2)).wait(timeout=120)
        with (
            Client(running.address, tls=pki.client(with_cert=False), token=ALICE) as stranger,
            pytest.raises(ControllerUnavailable) as refused,
        ):
            stranger.searches()
    assert final.state is SearchState.SUCCEEDED, final.error
    assert final.trials_completed == 2
    assert final.owner == "alice"
    assert "unavailable" in str(refused.value)
