"""Transport security over real gRPC servers on loopback: TLS, mutual TLS, the plaintext
health port, and the settings' errors. Certificates come from a CA made for each module
(``tests.common.certs``)."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import CollectorRegistry

from mnas.rpc import channel
from mnas.tls import (
    ClientTLS,
    ServerTLS,
    add_client_tls_arguments,
    add_server_tls_arguments,
    client_tls_from_args,
    server_tls_from_args,
)
from mnas.v1 import common_pb2, reward_pb2, reward_pb2_grpc
from services.common.server import RunningServer
from services.reward.server import make_server
from tests.common.certs import Pki, make_pki

REQUEST = reward_pb2.ScoreRequest(
    accuracy=0.8,
    latency_seconds=0.15,
    objective=common_pb2.Objective(
        target_latency_seconds=0.075, kind=common_pb2.OBJECTIVE_KIND_HARD
    ),
)


@pytest.fixture(scope="module")
def pki() -> Pki:
    return make_pki()


@pytest.fixture(scope="module")
def other_pki() -> Pki:
    return make_pki("another CA")


def _serve(tls: ServerTLS | None, health_port: int | None = None) -> RunningServer:
    return make_server(registry=CollectorRegistry(), tls=tls, health_port=health_port)


@pytest.fixture
def tls_server(pki: Pki) -> Iterator[RunningServer]:
    running = _serve(pki.server())
    yield running
    running.stop(0)


@pytest.fixture
def mtls_server(pki: Pki) -> Iterator[RunningServer]:
    running = _serve(pki.server(mutual=True))
    yield running
    running.stop(0)


def _score(address: str, tls: ClientTLS | None) -> float:
    with channel(address, tls=tls, max_attempts=2, initial_backoff=0.01) as ch:
        return reward_pb2_grpc.RewardStub(ch).Score(REQUEST, timeout=10).reward


def _refused(address: str, tls: ClientTLS | None) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as caught:
        _score(address, tls)
    return caught.value.code()


def test_a_client_that_trusts_the_servers_ca_calls_over_tls(
    tls_server: RunningServer, pki: Pki
) -> None:
    assert _score(tls_server.address, pki.client(with_cert=False)) == pytest.approx(0.4)


def test_a_client_that_trusts_another_ca_cannot_connect(
    tls_server: RunningServer, other_pki: Pki
) -> None:
    assert _refused(tls_server.address, other_pki.client(with_cert=False)) == (
        grpc.StatusCode.UNAVAILABLE
    )


def test_a_plaintext_client_cannot_call_a_tls_server(tls_server: RunningServer) -> None:
    assert _refused(tls_server.address, None) == grpc.StatusCode.UNAVAILABLE


def test_the_servers_name_is_checked(tls_server: RunningServer, pki: Pki) -> None:
    """The certificate names localhost and 127.0.0.1; told to expect another name, the
    client refuses it."""
    wrong = ClientTLS(ca=pki.ca, server_name="mnas-controller.example")
    assert _refused(tls_server.address, wrong) == grpc.StatusCode.UNAVAILABLE
    right = ClientTLS(ca=pki.ca, server_name="localhost")
    assert _score(tls_server.address, right) == pytest.approx(0.4)


def test_mutual_tls_admits_a_client_with_a_certificate_of_the_ca(
    mtls_server: RunningServer, pki: Pki
) -> None:
    assert _score(mtls_server.address, pki.client()) == pytest.approx(0.4)


def test_mutual_tls_refuses_a_client_without_a_certificate(
    mtls_server: RunningServer, pki: Pki
) -> None:
    assert _refused(mtls_server.address, pki.client(with_cert=False)) == (
        grpc.StatusCode.UNAVAILABLE
    )


def test_mutual_tls_refuses_a_certificate_another_ca_signed(
    mtls_server: RunningServer, pki: Pki, other_pki: Pki
) -> None:
    stranger = ClientTLS(ca=pki.ca, cert=other_pki.client_cert, key=other_pki.client_key)
    assert _refused(mtls_server.address, stranger) == grpc.StatusCode.UNAVAILABLE


def test_the_health_port_answers_in_plaintext_and_serves_nothing_else(pki: Pki) -> None:
    """A kubelet's gRPC probe speaks plaintext: the health-only port lets it probe a TLS
    service without opening the service itself to plaintext."""
    running = _serve(pki.server(mutual=True), health_port=0)
    try:
        assert running.health_port is not None
        health_address = f"127.0.0.1:{running.health_port}"
        with grpc.insecure_channel(health_address) as ch:
            answer = health_pb2_grpc.HealthStub(ch).Check(
                health_pb2.HealthCheckRequest(service="mnas.v1.Reward"), timeout=10
            )
            assert answer.status == health_pb2.HealthCheckResponse.SERVING
            with pytest.raises(grpc.RpcError) as caught:
                reward_pb2_grpc.RewardStub(ch).Score(REQUEST, timeout=10)
            assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED
        running.health.enter_graceful_shutdown()
        with grpc.insecure_channel(health_address) as ch:
            answer = health_pb2_grpc.HealthStub(ch).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=10
            )
        assert answer.status == health_pb2.HealthCheckResponse.NOT_SERVING
    finally:
        running.stop(0)


# --- settings from flags -------------------------------------------------------------------


def _server_args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_server_tls_arguments(parser)
    return parser.parse_args(argv)


def _client_args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_client_tls_arguments(parser)
    return parser.parse_args(argv)


@pytest.fixture
def files(tmp_path: Path, pki: Pki) -> dict[str, str]:
    paths = {}
    for name in ("ca", "server_cert", "server_key", "client_cert", "client_key"):
        path = tmp_path / f"{name}.pem"
        path.write_bytes(getattr(pki, name))
        paths[name] = str(path)
    (tmp_path / "empty.pem").write_text("not a certificate\n")
    paths["empty"] = str(tmp_path / "empty.pem")
    return paths


def test_no_flags_mean_plaintext() -> None:
    assert server_tls_from_args(_server_args()) is None
    assert client_tls_from_args(_client_args()) is None


def test_flags_read_the_files(files: dict[str, str], pki: Pki) -> None:
    server = server_tls_from_args(
        _server_args(
            "--tls-cert",
            files["server_cert"],
            "--tls-key",
            files["server_key"],
            "--tls-client-ca",
            files["ca"],
        )
    )
    assert server == pki.server(mutual=True)
    assert server is not None and server.mutual
    client = client_tls_from_args(
        _client_args(
            "--tls-ca",
            files["ca"],
            "--tls-client-cert",
            files["client_cert"],
            "--tls-client-key",
            files["client_key"],
        )
    )
    assert client == pki.client()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--tls-cert", "{server_cert}"], "--tls-cert and --tls-key: give both or neither"),
        (["--tls-client-ca", "{ca}"], "--tls-client-ca: needs --tls-cert and --tls-key"),
        (["--tls-cert", "{missing}", "--tls-key", "{server_key}"], "--tls-cert: cannot read"),
        (["--tls-cert", "{server_cert}", "--tls-key", "{empty}"], "--tls-key: "),
    ],
)
def test_server_flag_errors_name_the_flag(
    files: dict[str, str], tmp_path: Path, argv: list[str], message: str
) -> None:
    values = files | {"missing": str(tmp_path / "missing.pem")}
    with pytest.raises(ValueError, match="^" + message.replace("-", r"\-")):
        server_tls_from_args(_server_args(*(a.format(**values) for a in argv)))


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--tls-client-cert", "{client_cert}"], "--tls-client-cert and --tls-client-key"),
        (["--tls-server-name", "x"], "--tls-server-name: needs --tls-ca"),
        (["--tls-ca", "{empty}"], "--tls-ca: .* holds no PEM block"),
    ],
)
def test_client_flag_errors_name_the_flag(
    files: dict[str, str], argv: list[str], message: str
) -> None:
    with pytest.raises(ValueError, match="^" + message):
        client_tls_from_args(_client_args(*(a.format(**files) for a in argv)))
