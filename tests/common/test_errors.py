"""The shared table from domain errors to status codes, directly and over a real server."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import grpc
import pytest
from prometheus_client import CollectorRegistry

from mnas.errors import InvalidInput
from mnas.rpc import channel
from mnas.v1 import reward_pb2, reward_pb2_grpc
from services.common.errors import MAX_DETAILS, StatusTable
from services.common.server import RunningServer, build_server


class Busy(Exception):
    pass


class Stale(InvalidInput):
    """Bad input that a service reports with a code of its own."""


TABLE = StatusTable.of(
    (Busy, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (Stale, grpc.StatusCode.FAILED_PRECONDITION),
)
_logger = logging.getLogger("tests.common.test_errors")


def test_a_service_row_comes_before_the_shared_ones() -> None:
    assert TABLE.status(Busy("all slots taken")) == (
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "all slots taken",
    )
    assert TABLE.status(Stale("spec: changed"))[0] is grpc.StatusCode.FAILED_PRECONDITION
    assert TABLE.status(InvalidInput("runs: must be >= 1")) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "runs: must be >= 1",
    )


def test_anything_else_is_internal_even_a_bare_value_error() -> None:
    code, details = TABLE.status(ValueError("math domain error"))
    assert code is grpc.StatusCode.INTERNAL
    assert details == "internal error: ValueError: math domain error"
    code, details = TABLE.status(RuntimeError("x" * 1000))
    assert code is grpc.StatusCode.INTERNAL
    assert details.startswith("internal error: RuntimeError: xxx")
    assert len(details) == MAX_DETAILS


def test_describe_words_the_known_errors_only() -> None:
    table = StatusTable.of((Busy, grpc.StatusCode.RESOURCE_EXHAUSTED), describe=repr)
    assert table.status(Busy("b"))[1] == "Busy('b')"
    assert table.status(InvalidInput("i"))[1] == "InvalidInput('i')"
    assert table.status(KeyError("k"))[1] == "internal error: KeyError: 'k'"


class Failing(reward_pb2_grpc.RewardServicer):
    """Answers every Score with the error its request's accuracy picks."""

    ERRORS = (InvalidInput("accuracy: bad"), Busy("busy"), RuntimeError("boom " * 100))

    def Score(
        self, request: reward_pb2.ScoreRequest, context: grpc.ServicerContext
    ) -> reward_pb2.ScoreResponse:
        try:
            raise self.ERRORS[int(request.accuracy)]
        except Exception as err:
            TABLE.abort(context, err, logger=_logger, call="Score")


@pytest.fixture
def server() -> Iterator[RunningServer]:
    servicer = Failing()
    running = build_server(
        service_names=["mnas.v1.Reward"],
        add_servicers=lambda s: reward_pb2_grpc.add_RewardServicer_to_server(servicer, s),
        registry=CollectorRegistry(),
    )
    yield running
    running.stop(0)


@pytest.mark.parametrize(
    ("which", "code", "details"),
    [
        (0, grpc.StatusCode.INVALID_ARGUMENT, "accuracy: bad"),
        (1, grpc.StatusCode.RESOURCE_EXHAUSTED, "busy"),
        (2, grpc.StatusCode.INTERNAL, ("internal error: RuntimeError: " + "boom " * 100)[:300]),
    ],
)
def test_abort_ends_the_call_with_the_status(
    server: RunningServer,
    caplog: pytest.LogCaptureFixture,
    which: int,
    code: grpc.StatusCode,
    details: str,
) -> None:
    stub = reward_pb2_grpc.RewardStub(channel(server.address))
    with caplog.at_level(logging.ERROR, logger=_logger.name), pytest.raises(grpc.RpcError) as info:
        stub.Score(reward_pb2.ScoreRequest(accuracy=which), timeout=10)
    assert info.value.code() is code
    assert info.value.details() == details
    logged = [r for r in caplog.records if r.name == _logger.name]
    if code is grpc.StatusCode.INTERNAL:  # only the unexpected is logged, with its traceback
        assert [r.getMessage() for r in logged] == ["Score failed"]
        assert logged[0].exc_info is not None
    else:
        assert logged == []
