"""The reward service over a real gRPC server on loopback."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest
from prometheus_client import CollectorRegistry

from mnas.rpc import channel
from mnas.v1 import common_pb2, reward_pb2, reward_pb2_grpc
from services.common.server import RunningServer
from services.reward.server import make_server
from tests.common.grpc_helpers import health_status, reflected_services


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def server(registry: CollectorRegistry) -> Iterator[RunningServer]:
    running = make_server(registry=registry)
    yield running
    running.stop(0)


def objective(**kw: object) -> common_pb2.Objective:
    return common_pb2.Objective(**kw)  # type: ignore[arg-type]


def test_score_over_grpc(server: RunningServer, registry: CollectorRegistry) -> None:
    stub = reward_pb2_grpc.RewardStub(channel(server.address))
    response = stub.Score(
        reward_pb2.ScoreRequest(
            accuracy=0.8,
            latency_seconds=0.15,
            objective=objective(target_latency_seconds=0.075, kind=common_pb2.OBJECTIVE_KIND_HARD),
        ),
        timeout=5,
    )
    assert response.reward == pytest.approx(0.4)
    assert registry.get_sample_value("mnas_reward_scores_total", {"kind": "hard"}) == 1
    labels = {
        "grpc_type": "unary",
        "grpc_service": "mnas.v1.Reward",
        "grpc_method": "Score",
        "grpc_code": "OK",
    }
    assert registry.get_sample_value("grpc_server_handled_total", labels) == 1


@pytest.mark.parametrize(
    ("request_kw", "needle"),
    [
        ({"accuracy": 1.5, "latency_seconds": 0.1}, "accuracy"),
        ({"accuracy": 0.5, "latency_seconds": 0.0}, "latency_seconds"),
        (
            {
                "accuracy": 0.5,
                "latency_seconds": 0.1,
                "objective": objective(target_latency_seconds=0.1),
            },
            "objective.kind",
        ),
        (
            {
                "accuracy": 0.5,
                "latency_seconds": 0.1,
                "objective": objective(
                    target_latency_seconds=0.1, alpha=0.2, kind=common_pb2.OBJECTIVE_KIND_SOFT
                ),
            },
            "objective.alpha",
        ),
        (
            {
                "accuracy": 0.5,
                "latency_seconds": 0.1,
                "objective": objective(kind=common_pb2.OBJECTIVE_KIND_SOFT),
            },
            "objective.target_latency_seconds",
        ),
    ],
)
def test_invalid_requests_are_invalid_argument_naming_the_field(
    server: RunningServer,
    registry: CollectorRegistry,
    request_kw: dict[str, object],
    needle: str,
) -> None:
    request_kw.setdefault(
        "objective", objective(target_latency_seconds=0.1, kind=common_pb2.OBJECTIVE_KIND_SOFT)
    )
    stub = reward_pb2_grpc.RewardStub(channel(server.address))
    with pytest.raises(grpc.RpcError) as info:
        stub.Score(reward_pb2.ScoreRequest(**request_kw), timeout=5)  # type: ignore[arg-type]
    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert needle in str(info.value.details())
    labels = {
        "grpc_type": "unary",
        "grpc_service": "mnas.v1.Reward",
        "grpc_method": "Score",
        "grpc_code": "INVALID_ARGUMENT",
    }
    assert registry.get_sample_value("grpc_server_handled_total", labels) == 1


def test_health_and_reflection(server: RunningServer) -> None:
    assert health_status(server.address, "mnas.v1.Reward") == "SERVING"
    assert "mnas.v1.Reward" in reflected_services(server.address)
    server.health.enter_graceful_shutdown()
    assert health_status(server.address, "mnas.v1.Reward") == "NOT_SERVING"
