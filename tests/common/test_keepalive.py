"""A peer whose network hangs (no reset, no data) fails an in-flight call with
UNAVAILABLE within the keepalive's bounds, not at the call's deadline: the client pings
every 10 s and drops a connection whose ping goes unanswered for 5 s (``mnas.rpc``).

A real latency server (its oracle blocked, so the call is in flight) behind a loopback
TCP proxy that stops forwarding.
"""

from __future__ import annotations

import threading

import grpc
import pytest
from prometheus_client import CollectorRegistry

from benchmarks.tcp_proxy import TcpProxy
from mnas.rpc import channel
from mnas.v1 import common_pb2, latency_pb2, latency_pb2_grpc
from services.latency.server import make_server
from tests.common.blocked_oracle import BlockedOracle

pytestmark = pytest.mark.slow  # waits out a keepalive and a connect timeout: about 35 s


def test_a_call_through_a_hung_network_fails_unavailable_before_its_deadline() -> None:
    oracle = BlockedOracle()
    server = make_server(registry=CollectorRegistry(), oracles=[oracle])
    request = latency_pb2.MeasureRequest(
        architecture=common_pb2.Architecture(canonical="stem:8 r1_k3_s11_e1_i8_o8 head:16"),
        build=common_pb2.BuildParams(resolution=16, num_classes=10, width=1.0),
    )
    outcome: dict[str, grpc.StatusCode] = {}
    try:
        # Two attempts: the channel retries UNAVAILABLE, and the retry's connection
        # through the hung proxy waits out gRPC's 20 s connect timeout.
        with (
            TcpProxy(server.address) as proxy,
            channel(proxy.address, max_attempts=2) as ch,
        ):
            stub = latency_pb2_grpc.LatencyStub(ch)

            def call() -> None:
                try:
                    stub.Measure(request, timeout=240)
                    outcome["code"] = grpc.StatusCode.OK
                except grpc.RpcError as err:
                    outcome["code"] = err.code()

            caller = threading.Thread(target=call)
            caller.start()
            assert oracle.entered.wait(timeout=60)  # the call is in flight
            proxy.hang()
            caller.join(timeout=120)  # far less than the call's 240 s deadline
            assert not caller.is_alive(), "the call still waits on a hung connection"
    finally:
        oracle.release.set()
        server.stop(0)
    assert outcome["code"] == grpc.StatusCode.UNAVAILABLE
