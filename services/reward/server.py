"""The Reward servicer: proto in, :func:`rewards.reward`, proto out."""

from __future__ import annotations

import logging

import grpc
from prometheus_client import CollectorRegistry, Counter, Histogram

from mnas.tls import ServerTLS
from mnas.v1 import reward_pb2, reward_pb2_grpc
from services.common.errors import StatusTable
from services.common.server import RunningServer, build_server
from services.reward.conversions import objective_from_proto
from services.reward.rewards import reward

__all__ = ["SERVICE_NAME", "RewardServicer", "make_server"]

SERVICE_NAME = "mnas.v1.Reward"
_logger = logging.getLogger(__name__)

# The reward service has no errors of its own: bad input is InvalidInput.
_STATUS_TABLE = StatusTable.of()


class RewardServicer(reward_pb2_grpc.RewardServicer):
    def __init__(self, registry: CollectorRegistry) -> None:
        self._scored = Counter(
            "mnas_reward_scores_total",
            "Rewards computed, by objective kind.",
            ("kind",),
            registry=registry,
        )
        self._rewards = Histogram(
            "mnas_reward_value_ratio",
            "Rewards computed.",
            buckets=(0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0),
            registry=registry,
        )

    def Score(
        self, request: reward_pb2.ScoreRequest, context: grpc.ServicerContext
    ) -> reward_pb2.ScoreResponse:
        try:
            objective = objective_from_proto(request.objective)
            value = reward(request.accuracy, request.latency_seconds, objective)
        except Exception as err:
            _STATUS_TABLE.abort(context, err, logger=_logger, call="Score")
        self._scored.labels(objective.kind.value).inc()
        self._rewards.observe(value)
        return reward_pb2.ScoreResponse(reward=value)


def make_server(
    *,
    registry: CollectorRegistry,
    port: int = 0,
    host: str = "127.0.0.1",
    tls: ServerTLS | None = None,
    health_port: int | None = None,
) -> RunningServer:
    servicer = RewardServicer(registry)
    return build_server(
        service_names=[SERVICE_NAME],
        add_servicers=lambda s: reward_pb2_grpc.add_RewardServicer_to_server(servicer, s),
        registry=registry,
        port=port,
        host=host,
        tls=tls,
        health_port=health_port,
    )
