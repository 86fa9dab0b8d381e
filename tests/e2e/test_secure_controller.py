"""A controller process started with TLS, mutual TLS and a token file, driven by the
``mnas`` CLI as subprocesses: the flags reach the servers and channels they name.

The controller (``python -m services.controller``) and the CLI are real processes; the
reward and latency services are real servers in this process and the trainer a scripted
one, all asking for the same CA's client certificates: real worker servers, since the
controller's TLS flags toward its workers are under test.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import CollectorRegistry

from mnas.local import Process, free_port, start_service
from services.common.server import RunningServer
from services.latency.server import make_server as make_latency_server
from services.reward.server import make_server as make_reward_server
from tests.common.certs import Pki, make_pki
from tests.common.fake_trainer import FakeTrainer
from tests.common.fake_trainer import serve as serve_trainer

ALICE = "alice-token-0123456789abcdef"
BOB = "bob-token-0123456789abcdef0"

SPEC = """
name: secure
strategy: random
space:
  resolution: 28
  stages: [{expansion: 1, filters: 16, layers: 1, stride: 1}]
  choices: {ops: [dconv], kernels: [3], se_ratios: [0], skips: [identity],
            filter_ratios: [1], layer_deltas: [0]}
objective: {kind: soft, target_latency_seconds: 0.001}
budget: {max_trials: 1}
reference: none
"""


@pytest.fixture(scope="module")
def pki() -> Pki:
    return make_pki()


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory, pki: Pki) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("secure")
    paths = {}
    for name in ("ca", "server_cert", "server_key", "client_cert", "client_key"):
        paths[name] = root / f"{name}.pem"
        paths[name].write_bytes(getattr(pki, name))
    paths["tokens"] = root / "tokens.yaml"
    paths["tokens"].write_text(f"{ALICE}: alice\n{BOB}: bob\n")
    paths["spec"] = root / "spec.yaml"
    paths["spec"].write_text(SPEC)
    return paths


@pytest.fixture(scope="module")
def controller(
    tmp_path_factory: pytest.TempPathFactory, pki: Pki, files: dict[str, Path]
) -> Iterator[tuple[Process, int]]:
    tls = pki.server(mutual=True)
    workers: list[RunningServer] = [
        make_reward_server(registry=CollectorRegistry(), tls=tls),
        make_latency_server(registry=CollectorRegistry(), tls=tls),
    ]
    trainer = serve_trainer(FakeTrainer(), tls=tls)
    workdir = tmp_path_factory.mktemp("controller")
    health_port = free_port()
    process = start_service(
        "controller",
        log_dir=workdir,
        args=[
            "--store",
            str(workdir / "mnas.db"),
            "--reward",
            workers[0].address,
            "--latency",
            workers[1].address,
            "--trainer",
            trainer.address,
            "--tls-cert",
            str(files["server_cert"]),
            "--tls-key",
            str(files["server_key"]),
            "--tls-client-ca",
            str(files["ca"]),
            "--tls-ca",
            str(files["ca"]),
            "--tls-client-cert",
            str(files["client_cert"]),
            "--tls-client-key",
            str(files["client_key"]),
            "--auth-tokens",
            str(files["tokens"]),
            "--health-port",
            str(health_port),
        ],
    )
    try:
        with grpc.insecure_channel(f"127.0.0.1:{health_port}") as ch:
            answer = health_pb2_grpc.HealthStub(ch).Check(
                health_pb2.HealthCheckRequest(service="mnas.v1.Controller"),
                timeout=120,
                wait_for_ready=True,  # until the process listens
            )
        assert answer.status == health_pb2.HealthCheckResponse.SERVING, process.log_tail()
        yield process, health_port
    finally:
        process.terminate()
        trainer.stop(0)
        for worker in workers:
            worker.stop(0)


def _mnas(
    *argv: str, token: str | None, files: dict[str, Path], tls: bool = True
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MNAS_")}
    env["COLUMNS"] = "200"
    if token is not None:
        env["MNAS_TOKEN"] = token
    if tls:
        env |= {
            "MNAS_TLS_CA": str(files["ca"]),
            "MNAS_TLS_CLIENT_CERT": str(files["client_cert"]),
            "MNAS_TLS_CLIENT_KEY": str(files["client_key"]),
        }
    return subprocess.run(
        [sys.executable, "-m", "mnas.cli", *argv],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


def test_the_cli_submits_and_lists_as_its_user_over_mutual_tls(
    controller: tuple[Process, int], files: dict[str, Path]
) -> None:
    process, _ = controller
    target = ["--target", process.address]
    submitted = _mnas("submit", str(files["spec"]), *target, token=ALICE, files=files)
    assert submitted.returncode == 0, submitted.stderr
    search_id = submitted.stdout.strip()

    mine = _mnas("list", *target, token=ALICE, files=files)
    assert mine.returncode == 0, mine.stderr
    assert search_id in mine.stdout
    assert "alice" in mine.stdout  # the owner column

    theirs = _mnas("list", *target, token=BOB, files=files)
    assert theirs.returncode == 0, theirs.stderr
    assert search_id not in theirs.stdout

    hidden = _mnas("cancel", search_id, *target, token=BOB, files=files)
    assert hidden.returncode != 0
    assert hidden.stderr.strip() == f"mnas: error: no search {search_id!r}"

    log = process.log_path.read_text()
    assert "checking bearer tokens: 2 users" in log
    assert ALICE not in log and BOB not in log


@pytest.mark.parametrize(
    ("token", "tls", "message"),
    [
        (None, True, "Bearer"),  # no token
        ("not-a-token-of-this-controller", True, "Bearer"),
        (ALICE, False, "unavailable"),  # plaintext to a TLS port
    ],
    ids=["no-token", "wrong-token", "plaintext"],
)
def test_the_cli_is_refused_in_one_line(
    controller: tuple[Process, int],
    files: dict[str, Path],
    token: str | None,
    tls: bool,
    message: str,
) -> None:
    process, _ = controller
    result = _mnas("list", "--target", process.address, token=token, files=files, tls=tls)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mnas: error: "), result.stderr
    assert message in lines[0]
    if token is not None:
        assert token not in result.stderr


def test_a_bad_token_file_stops_the_controller_at_start_naming_the_entry(
    tmp_path: Path,
) -> None:
    tokens = tmp_path / "tokens.yaml"
    tokens.write_text(f"{ALICE}: alice\n{BOB}: {{user: bob, admin: maybe}}\n")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "services.controller",
            "--port",
            "0",
            "--trainer",
            "127.0.0.1:1",
            "--latency",
            "127.0.0.1:1",
            "--reward",
            "127.0.0.1:1",
            "--auth-tokens",
            str(tokens),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 2
    assert "--auth-tokens: " in result.stderr
    assert "entry 2: admin must be true or false" in result.stderr
    assert BOB not in result.stderr
