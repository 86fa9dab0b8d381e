"""Command-line flags and logging every service's ``__main__`` shares."""

from __future__ import annotations

import argparse
import logging

from mnas.tls import (
    ClientTLS,
    ServerTLS,
    add_client_tls_arguments,
    add_server_tls_arguments,
    client_tls_from_args,
    server_tls_from_args,
)

__all__ = [
    "add_client_tls_arguments",
    "base_parser",
    "client_tls",
    "configure_logging",
    "server_tls",
]


def base_parser(prog: str, description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback)")
    parser.add_argument("--port", type=int, required=True, help="gRPC port (0: any free port)")
    parser.add_argument(
        "--metrics-port", type=int, default=None, help="serve Prometheus /metrics on this port"
    )
    parser.add_argument(
        "--grace",
        type=float,
        default=10.0,
        help="seconds to finish in-flight calls on SIGTERM (default 10)",
    )
    parser.add_argument("--log-level", default="INFO", help="logging level (default INFO)")
    parser.add_argument(
        "--health-port",
        type=int,
        default=None,
        help="also serve the gRPC health service alone, in plaintext, on this port: for "
        "probes that cannot speak TLS (the kubelet's)",
    )
    add_server_tls_arguments(parser)
    return parser


def server_tls(parser: argparse.ArgumentParser, args: argparse.Namespace) -> ServerTLS | None:
    """The ``--tls-*`` flags of :func:`base_parser`; exits with a usage error naming the
    flag when one is missing or its file unreadable."""
    try:
        return server_tls_from_args(args)
    except ValueError as err:
        parser.error(str(err))


def client_tls(parser: argparse.ArgumentParser, args: argparse.Namespace) -> ClientTLS | None:
    """The flags of :func:`add_client_tls_arguments` (outgoing calls), as :func:`server_tls`."""
    try:
        return client_tls_from_args(args)
    except ValueError as err:
        parser.error(str(err))


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
