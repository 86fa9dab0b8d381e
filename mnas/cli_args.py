"""Arguments several ``mnas`` commands share: which architecture, and how it is built;
how to reach a service (token, TLS)."""

from __future__ import annotations

import argparse
import os

from mnas import references
from mnas.arch import Architecture, decode
from mnas.defaults import DEFAULT_NUM_CLASSES, DEFAULT_RESOLUTION, DEFAULT_WIDTH
from mnas.errors import UsageError
from mnas.tls import ClientTLS, add_client_tls_arguments, client_tls_from_args

__all__ = [
    "DEFAULT_LATENCY_TARGET",
    "DEFAULT_TARGET",
    "LATENCY_TARGET_ENV",
    "STORE_ENV",
    "TARGET_ENV",
    "TOKEN_ENV",
    "add_arch_selector",
    "add_connection_arguments",
    "arch_from_args",
    "connection_from_args",
]

TOKEN_ENV = "MNAS_TOKEN"
# The addresses and the store every command reads, as `mnas up` prints them.
TARGET_ENV, LATENCY_TARGET_ENV, STORE_ENV = "MNAS_TARGET", "MNAS_LATENCY_TARGET", "MNAS_STORE"
DEFAULT_TARGET = "127.0.0.1:50051"
DEFAULT_LATENCY_TARGET = "127.0.0.1:50052"  # where `mnas up` puts the latency service


def add_arch_selector(p: argparse.ArgumentParser) -> None:
    """``NAME`` or ``--blocks``, and the build parameters (width, resolution, classes)."""
    p.add_argument("name", nargs="?", help=f"a reference: {', '.join(references.names())}")
    p.add_argument("--blocks", help="block strings, e.g. 'r1_k3_s11_e1_i32_o16_noskip ...'")
    p.add_argument(
        "--width",
        type=float,
        default=DEFAULT_WIDTH,
        help=f"width multiplier (default {DEFAULT_WIDTH})",
    )
    p.add_argument(
        "--resolution",
        type=int,
        default=DEFAULT_RESOLUTION,
        help=f"input size (default {DEFAULT_RESOLUTION})",
    )
    p.add_argument(
        "--classes",
        type=int,
        default=DEFAULT_NUM_CLASSES,
        help=f"number of classes (default {DEFAULT_NUM_CLASSES})",
    )


def arch_from_args(args: argparse.Namespace) -> tuple[str | None, Architecture]:
    """The reference name (None for ``--blocks``) and the architecture."""
    if args.name and args.blocks:
        raise UsageError("give an architecture NAME or --blocks, not both")
    if args.name:
        return args.name, references.get(args.name)
    if args.blocks:
        return None, decode(args.blocks)
    raise UsageError(
        f"give an architecture NAME ({', '.join(references.names())}) or --blocks 'S1 S2 ...'"
    )


def add_connection_arguments(p: argparse.ArgumentParser, *, token: bool = True) -> None:
    """``--token`` (a controller's bearer token) and the ``--tls-*`` flags, each defaulting
    to its ``MNAS_*`` environment variable."""
    if token:
        p.add_argument(
            "--token",
            default=os.environ.get(TOKEN_ENV) or None,
            help=f"bearer token for a controller that checks tokens (env {TOKEN_ENV}, which "
            "keeps it out of the process list)",
        )
    add_client_tls_arguments(p, env=True)


def connection_from_args(args: argparse.Namespace) -> tuple[ClientTLS | None, str | None]:
    """The TLS settings and token of :func:`add_connection_arguments`' flags."""
    try:
        tls = client_tls_from_args(args)
    except ValueError as err:
        raise UsageError(str(err)) from None
    return tls, getattr(args, "token", None) or None
