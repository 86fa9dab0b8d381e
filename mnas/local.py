"""Run the four services on this machine, each as its own process, on loopback ports.

This is the embedded default: a SQLite store, host-CPU latency, Fashion-MNIST. It is what
``mnas up`` and ``mnas search`` start, and what the end-to-end tests start.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from mnas.parent_death import parent_death_signal
from services.trainer.cores import threads_per_slot

__all__ = [
    "LocalStack",
    "Process",
    "free_port",
    "port_is_free",
    "start_service",
    "wait_serving",
]

_logger = logging.getLogger(__name__)

SERVICE_NAMES = {
    "controller": "mnas.v1.Controller",
    "trainer": "mnas.v1.Trainer",
    "latency": "mnas.v1.Latency",
    "reward": "mnas.v1.Reward",
}


def free_port() -> int:
    """A TCP port on loopback that is free now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Process:
    """One service process and the address it serves."""

    name: str
    popen: subprocess.Popen[bytes]
    port: int
    metrics_port: int
    log_path: Path
    kind: str = ""
    args: tuple[str, ...] = ()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def alive(self) -> bool:
        return self.popen.poll() is None

    def terminate(self, timeout: float = 15.0) -> None:
        """SIGTERM, then SIGKILL if it has not exited within ``timeout``."""
        if self.popen.poll() is not None:
            return
        self.popen.send_signal(signal.SIGTERM)
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()

    def kill(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait()

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether nothing listens on ``host:port`` now (a bind succeeds)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def start_service(
    kind: str,
    *,
    log_dir: Path,
    args: Sequence[str] = (),
    name: str | None = None,
    env: dict[str, str] | None = None,
    port: int | None = None,
    die_with_parent: bool = False,
) -> Process:
    """Start ``python -m services.<kind>`` on free ports, logging to ``log_dir``.

    ``die_with_parent``: the service gets SIGTERM when the process that started it dies,
    however it dies (start it from a thread that lives as long as that process: Linux
    ties the signal to the starting thread)."""
    port, metrics_port = port or free_port(), free_port()
    name = name or kind
    log_path = log_dir / f"{name}.log"
    command = [
        sys.executable,
        "-m",
        f"services.{kind}",
        "--port",
        str(port),
        "--metrics-port",
        str(metrics_port),
        *args,
    ]
    log = open(log_path, "ab")  # noqa: SIM115 - the child owns it
    process_env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})}
    popen = subprocess.Popen(
        command,
        stdout=log,
        stderr=subprocess.STDOUT,
        env=process_env,
        stdin=subprocess.DEVNULL,
        preexec_fn=parent_death_signal(signal.SIGTERM) if die_with_parent else None,
    )
    log.close()
    return Process(
        name=name,
        popen=popen,
        port=port,
        metrics_port=metrics_port,
        log_path=log_path,
        kind=kind,
        args=tuple(args),
    )


def wait_serving(process: Process, service: str, timeout: float = 120.0) -> None:
    """Block until ``process`` reports SERVING for ``service``; raise if it dies first."""
    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(process.address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while True:
            if not process.alive():
                raise RuntimeError(
                    f"{process.name} exited with {process.popen.returncode}:\n{process.log_tail()}"
                )
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(
                    f"{process.name} not serving after {timeout:.0f}s:\n{process.log_tail()}"
                )
            try:
                response = stub.Check(
                    health_pb2.HealthCheckRequest(service=service),
                    timeout=min(2.0, remaining),
                    wait_for_ready=True,
                )
                if response.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.1)  # polling a process that is starting up


@dataclass
class LocalStack:
    """The four services as processes: ``trainers`` trainers, one latency, one reward;
    ``die_with_parent``: as :func:`start_service` takes it, for every service."""

    workdir: Path
    store: str
    trainers: int = 1
    trainer_args: Sequence[str] = ()
    controller_port: int | None = None
    latency_port: int | None = None
    processes: list[Process] = field(default_factory=list)
    die_with_parent: bool = False

    def start(self, timeout: float = 180.0) -> LocalStack:
        self.workdir.mkdir(parents=True, exist_ok=True)
        linked = self.die_with_parent
        try:
            workers = [
                start_service("reward", log_dir=self.workdir, die_with_parent=linked),
                start_service(
                    "latency", log_dir=self.workdir, port=self.latency_port, die_with_parent=linked
                ),
            ]
            # Share the usable cores among trainers: oversubscribed torch thread pools crawl.
            threads = threads_per_slot(self.trainers)
            # On one's own machine a spec may name any directory one can read.
            trainer_args = ["--threads", str(threads), "--data-root", "/", *self.trainer_args]
            workers += [
                start_service(
                    "trainer",
                    log_dir=self.workdir,
                    name=f"trainer-{i}",
                    args=trainer_args,
                    die_with_parent=linked,
                )
                for i in range(self.trainers)
            ]
            self.processes.extend(workers)
            for process in workers:
                wait_serving(process, SERVICE_NAMES[process.name.split("-")[0]], timeout)
            args = [
                "--store",
                self.store,
                "--reward",
                workers[0].address,
                "--latency",
                workers[1].address,
            ]
            for trainer in workers[2:]:
                args += ["--trainer", trainer.address]
            controller = start_service(
                "controller",
                log_dir=self.workdir,
                args=args,
                port=self.controller_port,
                die_with_parent=linked,
            )
            self.processes.append(controller)
            wait_serving(controller, SERVICE_NAMES["controller"], timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def restart(self, name: str, timeout: float = 120.0) -> Process:
        """Start ``name`` again with the same arguments and port (after it was killed)."""
        old = self.process(name)
        old.kill()
        new = start_service(
            old.kind,
            log_dir=self.workdir,
            args=old.args,
            name=old.name,
            port=old.port,
            die_with_parent=self.die_with_parent,
        )
        self.processes[self.processes.index(old)] = new
        wait_serving(new, SERVICE_NAMES[old.kind], timeout)
        return new

    def process(self, name: str) -> Process:
        for process in self.processes:
            if process.name == name:
                return process
        raise KeyError(name)

    @property
    def controller(self) -> str:
        return self.process("controller").address

    @property
    def latency(self) -> str:
        return self.process("latency").address

    def stop(self) -> None:
        """SIGTERM every process, the controller first."""
        for process in reversed(self.processes):
            process.terminate()

    def __enter__(self) -> LocalStack:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()
