"""Build a gRPC server with health, reflection and RPC metrics; run it until a signal.

Every service's ``make_server`` calls :func:`build_server` with its own servicers, so tests
start real servers on free loopback ports; ``__main__`` modules call :func:`serve`.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable, Sequence
from concurrent import futures
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from prometheus_client import CollectorRegistry, start_http_server

from mnas.rpc import KEEPALIVE_SERVER
from mnas.tls import ServerTLS
from services.common.build_info import register_build_info
from services.common.rpc_metrics import RpcMetrics, RpcMetricsInterceptor

__all__ = [
    "RunningServer",
    "build_server",
    "catch_stop_signals",
    "serve",
    "serve_from_args",
    "service_registry",
]

_logger = logging.getLogger(__name__)

# Set by SIGTERM or SIGINT once :func:`catch_stop_signals` ran.
_stop_requested = threading.Event()


def catch_stop_signals() -> None:
    """From now on, SIGTERM and SIGINT ask the service to stop instead of killing it: one
    that arrives while the service is still starting (its health may already say SERVING)
    stops it gracefully as soon as :func:`serve` runs. Call it first thing in ``main``."""

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        _logger.info("signal %d: shutting down", signum)
        _stop_requested.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)


@dataclass
class RunningServer:
    """A started server, the port it bound and its health servicer; ``health_server``
    and ``health_port``: the plaintext health-only server, when one was asked for."""

    server: grpc.Server
    port: int
    health: health.HealthServicer
    service_names: tuple[str, ...]
    on_stop: list[Callable[[], None]] = field(default_factory=list)
    health_server: grpc.Server | None = None
    health_port: int | None = None
    _deadline: float | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self, grace: float | None = 5.0) -> None:
        """Stop accepting first, then drain, all within ``grace`` seconds: report
        NOT_SERVING and refuse new calls at once (UNAVAILABLE), run the ``on_stop``
        callbacks (which finish or hand back the service's own work, within
        :meth:`seconds_left`), and cancel the calls still in flight at the deadline."""
        self._deadline = time.monotonic() + (grace or 0.0)
        self.health.enter_graceful_shutdown()
        stopped = self.server.stop(grace)
        for callback in self.on_stop:
            callback()
        stopped.wait()
        if self.health_server is not None:
            self.health_server.stop(0).wait()

    def seconds_left(self) -> float:
        """Of the stop's grace (0 before :meth:`stop` and once it is spent)."""
        if self._deadline is None:
            return 0.0
        return max(0.0, self._deadline - time.monotonic())


def build_server(
    *,
    service_names: Sequence[str],
    add_servicers: Callable[[grpc.Server], None],
    registry: CollectorRegistry,
    port: int = 0,
    host: str = "127.0.0.1",
    max_workers: int = 32,
    tls: ServerTLS | None = None,
    health_port: int | None = None,
    interceptors: Sequence[grpc.ServerInterceptor] = (),  # type: ignore[type-arg]
) -> RunningServer:
    """Create, bind and start a server; ``port=0`` picks a free port.

    ``tls``: serve TLS (mutual when it names a client CA) instead of plaintext.
    ``health_port``: also serve the health service alone, in plaintext, on that port (0:
    any free one), for probes that cannot speak TLS (the kubelet's gRPC probe).
    ``interceptors`` run after the RPC metrics', so refused calls are counted.
    """
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="grpc"),
        interceptors=[RpcMetricsInterceptor(RpcMetrics(registry)), *interceptors],
        options=[("grpc.so_reuseport", 0), *KEEPALIVE_SERVER],
    )
    add_servicers(server)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    names = tuple(service_names)
    reflection.enable_server_reflection(
        (*names, health.SERVICE_NAME, reflection.SERVICE_NAME), server
    )
    address = f"{host}:{port}"
    if tls is None:
        bound = server.add_insecure_port(address)
    else:
        bound = server.add_secure_port(address, tls.credentials())
    if bound == 0:
        raise OSError(f"could not bind {address}")
    health_server, health_bound = None, None
    if health_port is not None:
        health_server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="grpc-health"),
            options=[("grpc.so_reuseport", 0)],
        )
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, health_server)
        health_bound = health_server.add_insecure_port(f"{host}:{health_port}")
        if health_bound == 0:
            raise OSError(f"could not bind the health port {host}:{health_port}")
    server.start()
    if health_server is not None:
        health_server.start()
    for name in ("", *names):
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    return RunningServer(
        server=server,
        port=bound,
        health=health_servicer,
        service_names=names,
        health_server=health_server,
        health_port=health_bound,
    )


def serve(running: RunningServer, *, grace: float = 10.0) -> None:
    """Block until SIGTERM or SIGINT, then stop gracefully within ``grace`` seconds."""
    catch_stop_signals()
    _logger.info("serving %s on port %d", ", ".join(running.service_names), running.port)
    if running.health_port is not None:
        _logger.info("health (plaintext) on port %d", running.health_port)
    _stop_requested.wait()
    _logger.info("stopping (grace %.0fs)", grace)
    running.stop(grace)
    _logger.info("stopped")


def service_registry(args: Any, role: str) -> CollectorRegistry:
    """The registry of a service process: ``mnas_build_info`` for ``role``, served on
    ``--metrics-port`` from now on, so that /metrics answers before the service reports
    SERVING (a probe or scraper that finds it serving finds its metrics too)."""
    registry = CollectorRegistry()
    register_build_info(registry, role)
    if args.metrics_port is not None:
        start_http_server(args.metrics_port, addr=args.host, registry=registry)
        _logger.info("metrics on http://%s:%d/metrics", args.host, args.metrics_port)
    return registry


def serve_from_args(running: RunningServer, args: Any) -> None:
    """:func:`serve` with the flags of :func:`services.common.cli.base_parser` (its
    /metrics already served by :func:`service_registry`)."""
    serve(running, grace=args.grace)
